"""The publishing settings: the Kaggle owner, the slugs, and the metadata rendered from the
committed templates (where each is configured: :mod:`rsna_lumbar.publish`)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from rsna_lumbar.publish import PublishError

PLACEHOLDER_OWNER = "your-kaggle-username"
COMPETITION = "rsna-2024-lumbar-spine-degenerative-classification"
DATASET_METADATA = "dataset-metadata.json"
KERNEL_DIR = "kernels"
KERNEL_METADATA = "kernel-metadata.json"
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def kaggle_config_dir() -> Path:
    """The folder the kaggle CLI reads ``kaggle.json`` from (same rules as the CLI)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    if home.is_dir():
        return home
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "kaggle"


def resolve_owner(explicit: str | None = None) -> str:
    """The Kaggle user that owns the dataset and kernel: flag, env, then ``kaggle.json``."""
    owner = explicit or os.environ.get("KAGGLE_USERNAME")
    if not owner:
        config = kaggle_config_dir() / "kaggle.json"
        if config.is_file():
            try:
                owner = json.loads(config.read_text(encoding="utf-8")).get("username")
            except (OSError, ValueError):
                owner = None
    if not owner or owner == PLACEHOLDER_OWNER:
        msg = (
            "No Kaggle user name: run e.g. 'make push-weights KAGGLE_USER=<your-kaggle-username>', "
            "or export KAGGLE_USERNAME, or keep a kaggle.json with your username in "
            f"{kaggle_config_dir()} (https://www.kaggle.com/settings/api)."
        )
        raise PublishError(msg)
    if not _OWNER.fullmatch(owner):
        msg = f"Kaggle user name {owner!r} looks wrong: use the name in your profile URL."
        raise PublishError(msg)
    return owner


def _check_slug(slug: str, what: str, lo: int, hi: int) -> str:
    if not (_SLUG.fullmatch(slug) and lo <= len(slug) <= hi):
        msg = f"{what} {slug!r} must be {lo}-{hi} characters of a-z, 0-9 and '-'."
        raise PublishError(msg)
    return slug


def load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{path} is missing: restore it with 'git checkout -- {path.name}'."
        raise PublishError(msg) from None
    except ValueError as err:
        raise PublishError(f"{path} is not valid JSON ({err}): fix or restore it.") from None


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _slug_of(ref: str) -> str:
    return ref.split("/", 1)[1] if "/" in ref else ref


def render_dataset_metadata(root: Path, owner: str, dataset: str | None = None) -> dict:
    """``dataset-metadata.json`` with the owner (and optionally the slug) filled in."""
    meta = load_json(root / DATASET_METADATA)
    slug = _check_slug(dataset or _slug_of(meta["id"]), "WEIGHTS_DATASET", 6, 50)
    meta["id"] = f"{owner}/{slug}"
    return meta


def render_kernel_metadata(
    root: Path, owner: str, kernel: str | None = None, dataset: str | None = None
) -> dict:
    """``kernel-metadata.json`` for ``owner``: id, the weights dataset source, competition."""
    meta = load_json(root / KERNEL_DIR / KERNEL_METADATA)
    template_dataset = _slug_of(load_json(root / DATASET_METADATA)["id"])
    weights_slug = _check_slug(dataset or template_dataset, "WEIGHTS_DATASET", 6, 50)
    slug = _check_slug(kernel or _slug_of(meta["id"]), "KERNEL_SLUG", 5, 50)
    if kernel:
        meta["title"] = slug.replace("-", " ")  # a title that slugifies back to the slug
    meta["id"] = f"{owner}/{slug}"
    others = [s for s in meta.get("dataset_sources", []) if _slug_of(s) != template_dataset]
    meta["dataset_sources"] = [f"{owner}/{weights_slug}", *others]
    if COMPETITION not in meta.get("competition_sources", []):
        meta["competition_sources"] = [COMPETITION, *meta.get("competition_sources", [])]
    return meta
