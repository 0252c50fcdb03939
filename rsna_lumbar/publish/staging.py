"""Staging folders under ``build/``: the weights dataset (after the provenance guard) and the
kernel."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from rsna_lumbar import __version__
from rsna_lumbar.inference.ensemble import read_ensemble
from rsna_lumbar.provenance import SYNTHETIC, read_provenance
from rsna_lumbar.publish import PublishError
from rsna_lumbar.publish.metadata import (
    DATASET_METADATA,
    KERNEL_DIR,
    KERNEL_METADATA,
    render_dataset_metadata,
    render_kernel_metadata,
    write_json,
)
from rsna_lumbar.publish.wheels import REQUIREMENTS_FILE

WEIGHTS_MANIFEST = "MANIFEST.json"  # in the staged weights/: each model folder's provenance


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def model_folders(weights: Path) -> list[Path]:
    """The model folders of ``weights``: sub-folders holding ``model.json`` (severity models) or
    ``config.json`` (the localiser), plus the members and localiser ``ensemble.yaml`` names at
    any depth; hidden ones are never uploaded, so never counted."""
    ensemble = read_ensemble(weights)
    named = {m.path for m in ensemble.members} | {ensemble.localizer} - {None}
    direct = {p for p in weights.iterdir() if (p / "model.json").is_file()
              or (p / "config.json").is_file()}
    return sorted(p for p in named | direct if p.is_dir() and not p.name.startswith("."))


_ALLOW = "pass ALLOW_SYNTHETIC=1 (--allow-synthetic) to publish anyway"


def check_weights(weights: Path, allow_synthetic: bool = False) -> dict[str, dict | None]:
    """Each model folder's provenance (None: none recorded), after the guards that
    :mod:`rsna_lumbar.publish` lists.

    Raises :class:`PublishError` naming the offending folders unless ``allow_synthetic``, in
    which case they are only warned about.
    """
    folders = model_folders(weights)
    if not folders:
        msg = (f"{weights} holds no model folder (a sub-folder with model.json, or localizer/ "
               "with config.json): a submission from it would be the class priors at best. Train "
               f"models into it (README: Kaggle), or {_ALLOW}.")
        if not allow_synthetic:
            raise PublishError(msg)
        print(f"warning: {msg}", file=sys.stderr)
    records = {str(p.relative_to(weights)): read_provenance(p) for p in folders}
    bad = []
    for name, record in records.items():
        if record is None:
            bad.append(f"  {name}: no provenance.json (trained before it was recorded, or "
                       "'rsna-lumbar train' ran without --data)")
        elif record.get("data_kind") == SYNTHETIC:
            bad.append(f"  {name}: trained on synthetic data ({record.get('data_folder')})")
    if bad:
        msg = ("these model folders were not trained on the competition data:\n"
               + "\n".join(bad) + "\nA Kaggle submission from synthetic-trained models scores "
               "like noise. Retrain them on the competition folder ('rsna-lumbar train --data "
               f"DIR ...', 'rsna-lumbar localize --data DIR ...'), or {_ALLOW}.")
        if not allow_synthetic:
            raise PublishError(msg)
        print(f"warning (ALLOW_SYNTHETIC): {msg}", file=sys.stderr)
    return records


def stage_weights(root: Path, out: Path, owner: str, dataset: str | None = None,
                  weights: Path | None = None, wheelhouse: Path | None = None, *,
                  allow_synthetic: bool = False) -> Path:
    """Fill ``out`` with ``weights/`` (plus ``MANIFEST.json``), ``wheels/`` and the rendered
    ``dataset-metadata.json``; refuses weights that are not what a submission needs
    (:func:`check_weights`) unless ``allow_synthetic``."""
    weights = weights or root / "weights"
    wheelhouse = wheelhouse or root / "wheelhouse"
    if not weights.is_dir():
        raise PublishError(f"{weights} does not exist: train models into it, or pass --weights.")
    if not (wheelhouse / REQUIREMENTS_FILE).is_file():
        raise PublishError(f"{wheelhouse} has no {REQUIREMENTS_FILE}: run 'make wheels' first.")
    records = check_weights(weights, allow_synthetic)
    meta = render_dataset_metadata(root, owner, dataset)
    if not [w for w in wheelhouse.glob("*.whl") if not w.name.startswith("rsna_lumbar-")]:
        print(f"warning: {wheelhouse} holds only the kit's wheel; 'make wheels' adds the packages "
              "the Kaggle image lacks", file=sys.stderr)
    out = _fresh(out)
    skip = shutil.ignore_patterns(".*", "__pycache__", "*.pyc")
    shutil.copytree(weights, out / "weights", ignore=skip)
    shutil.copytree(wheelhouse, out / "wheels", ignore=skip)
    write_json(out / "weights" / WEIGHTS_MANIFEST,
                {"kit_version": __version__, "allow_synthetic": allow_synthetic,
                 "models": records})
    write_json(out / DATASET_METADATA, meta)
    return out


def stage_kernel(root: Path, out: Path, owner: str, kernel: str | None = None,
                 dataset: str | None = None) -> Path:
    """Fill ``out`` with the kernel script and the rendered ``kernel-metadata.json``."""
    meta = render_kernel_metadata(root, owner, kernel, dataset)
    code = root / KERNEL_DIR / meta["code_file"]
    if not code.is_file():
        raise PublishError(f"{code} (code_file of {KERNEL_METADATA}) is missing: restore it.")
    out = _fresh(out)
    shutil.copy2(code, out / code.name)
    write_json(out / KERNEL_METADATA, meta)
    return out
