"""Publish the kit to Kaggle: the offline wheelhouse, the weights dataset, the inference kernel.

The Make targets ``wheels``, ``push-weights`` and ``push-kernel`` are thin wrappers over
``python -m rsna_lumbar.kaggle_publish STEP`` (``wheels``, ``stage-weights``, ``push-weights``,
``stage-kernel``, ``push-kernel``).

Where things are configured (one place each):

- The slugs live in the committed templates: ``dataset-metadata.json`` (the weights dataset,
  ``id``) and ``kernels/kernel-metadata.json`` (the kernel, ``id``). Their owner is the
  placeholder ``your-kaggle-username``; ``--dataset``/``--kernel`` (Make: ``WEIGHTS_DATASET``,
  ``KERNEL_SLUG``) override the slugs.
- The owner is ``--owner`` (Make: ``KAGGLE_USER``), else ``KAGGLE_USERNAME``, else the
  ``username`` of your ``kaggle.json``. Only the user *name* is ever read here; the key stays
  with the kaggle CLI, which finds your credentials the usual way.

Rendered metadata is written only into staging folders under ``build/`` (git-ignored), never
into the committed templates. Uploads go through the real ``kaggle`` CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rsna_lumbar import __version__

PLACEHOLDER_OWNER = "your-kaggle-username"
COMPETITION = "rsna-2024-lumbar-spine-degenerative-classification"
DATASET_METADATA = "dataset-metadata.json"
KERNEL_DIR = "kernels"
KERNEL_METADATA = "kernel-metadata.json"
REQUIREMENTS_FILE = "kaggle-requirements.txt"  # written into the wheelhouse; the kernel installs it
KIT_DIST = "rsna-lumbar"
# Kaggle's GPU images are x86-64 Linux with a recent glibc. pip 23 does not expand the
# PEP 600 tags itself, so list the ones a wheel may carry.
KAGGLE_PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
)
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class PublishError(RuntimeError):
    """A publishing step cannot go on; the message says what to do."""


# ---------------------------------------------------------------------------------- settings


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


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{path} is missing: restore it with 'git checkout -- {path.name}'."
        raise PublishError(msg) from None
    except ValueError as err:
        raise PublishError(f"{path} is not valid JSON ({err}): fix or restore it.") from None


def _slug_of(ref: str) -> str:
    return ref.split("/", 1)[1] if "/" in ref else ref


def render_dataset_metadata(root: Path, owner: str, dataset: str | None = None) -> dict:
    """``dataset-metadata.json`` with the owner (and optionally the slug) filled in."""
    meta = _load_json(root / DATASET_METADATA)
    slug = _check_slug(dataset or _slug_of(meta["id"]), "WEIGHTS_DATASET", 6, 50)
    meta["id"] = f"{owner}/{slug}"
    return meta


def render_kernel_metadata(
    root: Path, owner: str, kernel: str | None = None, dataset: str | None = None
) -> dict:
    """``kernel-metadata.json`` for ``owner``: id, the weights dataset source, competition."""
    meta = _load_json(root / KERNEL_DIR / KERNEL_METADATA)
    template_dataset = _slug_of(_load_json(root / DATASET_METADATA)["id"])
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


# ---------------------------------------------------------------------------------- wheels


def build_kit_wheel(root: Path, wheelhouse: Path) -> Path:
    """Build the kit's wheel (offline) into ``wheelhouse``, replacing an older kit wheel.

    The build runs on a clean copy of the sources so that stale ``build/`` or ``*.egg-info``
    folders in the working tree never leak into the wheel.
    """
    wheelhouse.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rsna-wheel-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copy2(root / name, src / name)
        shutil.copytree(root / "rsna_lumbar", src / "rsna_lumbar",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--no-index", "--disable-pip-version-check", "-q", "-w", str(out), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        built = sorted(out.glob("rsna_lumbar-*.whl"))
        if done.returncode != 0 or not built:
            msg = (f"building the kit's wheel failed:\n{done.stdout}{done.stderr}\n"
                   "It needs setuptools>=68 in this environment: make install.")
            raise PublishError(msg)
        for old in wheelhouse.glob("rsna_lumbar-*.whl"):
            old.unlink()
        target = wheelhouse / built[0].name
        shutil.move(str(built[0]), target)
    return target


def pinned(packages: list[str], requirements: Path) -> list[str]:
    """``name==version`` for each package, with the version taken from requirements.txt."""
    pins = {}
    if requirements.is_file():
        for line in requirements.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s#;]+)", line)
            if m:
                pins[_norm(m[1])] = f"{m[1]}=={m[2]}"
    return [p if "=" in p or "<" in p or ">" in p else pins.get(_norm(p), p) for p in packages]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download_wheels(specs: list[str], wheelhouse: Path, pythons: list[str]) -> None:
    """``pip download`` binary wheels of ``specs`` for Kaggle's Linux x86-64, per Python version.

    ``--no-deps``: list every package the Kaggle image lacks; their dependencies that the image
    has (numpy, ...) are not fetched again.
    """
    for python in pythons:
        cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
               "--disable-pip-version-check", "--implementation", "cp", "--python-version",
               python, "-d", str(wheelhouse)]
        for platform in KAGGLE_PLATFORMS:
            cmd += ["--platform", platform]
        print("+", " ".join(cmd + specs), flush=True)
        if subprocess.run(cmd + specs).returncode != 0:
            msg = (f"pip download for Python {python} failed (see above): check the network, "
                   "or change KAGGLE_WHEELS / KAGGLE_PYTHON in the Makefile.")
            raise PublishError(msg)


def write_requirements(wheelhouse: Path) -> Path:
    """Write ``kaggle-requirements.txt``: ``name==version`` per distribution in ``wheelhouse``."""
    found: dict[str, str] = {}
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        key = _norm(name)
        if found.setdefault(key, version) != version:
            msg = (f"{wheelhouse} holds two versions of {key} ({found[key]}, {version}): "
                   "run 'make wheels' to rebuild it from scratch.")
            raise PublishError(msg)
    if _norm(KIT_DIST) not in found:
        raise PublishError(f"no rsna_lumbar wheel in {wheelhouse}: run 'make wheels'.")
    lines = [f"{name}=={version}" for name, version in sorted(found.items())]
    path = wheelhouse / REQUIREMENTS_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_wheelhouse(root: Path, wheelhouse: Path, download: list[str] | None = None,
                    pythons: tuple[str, ...] = ("3.10",)) -> Path:
    """Kit wheel (+ downloaded extras, after emptying ``wheelhouse``) + requirements file."""
    if download:
        shutil.rmtree(wheelhouse, ignore_errors=True)
        download_wheels(pinned(download, root / "requirements.txt"), wheelhouse, list(pythons))
    build_kit_wheel(root, wheelhouse)
    return write_requirements(wheelhouse)


# ---------------------------------------------------------------------------------- staging


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def stage_weights(root: Path, out: Path, owner: str, dataset: str | None = None,
                  weights: Path | None = None, wheelhouse: Path | None = None) -> Path:
    """Fill ``out`` with ``weights/``, ``wheels/`` and the rendered ``dataset-metadata.json``."""
    weights = weights or root / "weights"
    wheelhouse = wheelhouse or root / "wheelhouse"
    if not weights.is_dir():
        raise PublishError(f"{weights} does not exist: train models into it, or pass --weights.")
    if not (wheelhouse / REQUIREMENTS_FILE).is_file():
        raise PublishError(f"{wheelhouse} has no {REQUIREMENTS_FILE}: run 'make wheels' first.")
    meta = render_dataset_metadata(root, owner, dataset)
    if not [w for w in wheelhouse.glob("*.whl") if not w.name.startswith("rsna_lumbar-")]:
        print(f"warning: {wheelhouse} holds only the kit's wheel; 'make wheels' adds the packages "
              "the Kaggle image lacks", file=sys.stderr)
    out = _fresh(out)
    skip = shutil.ignore_patterns(".*", "__pycache__", "*.pyc")
    shutil.copytree(weights, out / "weights", ignore=skip)
    shutil.copytree(wheelhouse, out / "wheels", ignore=skip)
    _write_json(out / DATASET_METADATA, meta)
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
    _write_json(out / KERNEL_METADATA, meta)
    return out


# ---------------------------------------------------------------------------------- kaggle CLI


def kaggle_executable() -> str:
    """The ``kaggle`` CLI next to this Python (the venv), else on PATH."""
    here = Path(sys.executable).parent / "kaggle"
    found = str(here) if here.is_file() else shutil.which("kaggle")
    if not found:
        msg = "the kaggle CLI is not installed: pip install 'rsna-lumbar[kaggle]' (kaggle + six)."
        raise PublishError(msg)
    return found


def _kaggle(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [kaggle_executable(), *args]
    print("+ kaggle", " ".join(args), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    text = done.stdout + done.stderr
    failed = done.returncode != 0 or re.search(r"(creation|push) error", text)
    if check and failed:
        msg = f"'kaggle {' '.join(args)}' failed (exit {done.returncode}); its output is above."
        raise PublishError(msg)
    return done


def dataset_exists(ref: str) -> bool:
    """True when ``kaggle datasets status`` finds ``ref``; False on 404; raises otherwise."""
    done = _kaggle("datasets", "status", ref, check=False)
    if done.returncode == 0:
        return True
    text = done.stdout + done.stderr
    if "404" in text or "not found" in text.lower():
        return False
    raise PublishError(f"'kaggle datasets status {ref}' failed; its output is above.")


def version_notes(root: Path) -> str:
    notes = f"rsna-lumbar {__version__}"
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        return f"{notes} ({sha})" if sha else notes
    except (OSError, subprocess.CalledProcessError):
        return notes


def push_weights(staged: Path, notes: str) -> str:
    """``datasets version`` when the dataset exists, else ``datasets create``; returns which."""
    ref = _load_json(staged / DATASET_METADATA)["id"]
    if dataset_exists(ref):
        _kaggle("datasets", "version", "-p", str(staged), "-m", notes, "--dir-mode", "zip")
        return "version"
    _kaggle("datasets", "create", "-p", str(staged), "--dir-mode", "zip")
    return "create"


def push_kernel(staged: Path) -> None:
    _kaggle("kernels", "push", "-p", str(staged))


# ---------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rsna_lumbar.kaggle_publish",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    sub = parser.add_subparsers(dest="step", required=True)
    wheels = sub.add_parser("wheels", help="build the offline wheelhouse")
    wheels.add_argument("--out", type=Path, default=Path("wheelhouse"))
    wheels.add_argument("--download", nargs="*", default=[], metavar="PKG",
                        help="also fetch these (pinned as in requirements.txt); empties --out")
    wheels.add_argument("--python", nargs="+", default=["3.10"], help="Kaggle Python versions")
    for step in ("stage-weights", "push-weights", "stage-kernel", "push-kernel"):
        p = sub.add_parser(step)
        p.add_argument("--owner", help="Kaggle user (default: KAGGLE_USERNAME or kaggle.json)")
        p.add_argument("--dataset", help="weights dataset slug (default: dataset-metadata.json)")
        if "weights" in step:
            p.add_argument("--weights", type=Path, help="model folders (default: ROOT/weights)")
            p.add_argument("--wheelhouse", type=Path, help="default: ROOT/wheelhouse")
            p.add_argument("--out", type=Path, default=Path("build/kaggle-dataset"))
            p.add_argument("--notes", help="version notes (default: kit version + git commit)")
        else:
            p.add_argument("--kernel", help="kernel slug (default: kernels/kernel-metadata.json)")
            p.add_argument("--out", type=Path, default=Path("build/kaggle-kernel"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.root.resolve()
    try:
        if args.step == "wheels":
            req = make_wheelhouse(root, args.out, args.download, tuple(args.python))
            print(f"wheelhouse {args.out}: {', '.join(req.read_text().split())}")
            return 0
        owner = resolve_owner(args.owner)
        if args.step in ("stage-weights", "push-weights"):
            staged = stage_weights(root, args.out, owner, args.dataset, args.weights,
                                   args.wheelhouse)
            print(f"staged {staged}")
            if args.step == "push-weights":
                how = push_weights(staged, args.notes or version_notes(root))
                print(f"weights dataset: {how} done")
        else:
            staged = stage_kernel(root, args.out, owner, args.kernel, args.dataset)
            print(f"staged {staged}")
            if args.step == "push-kernel":
                push_kernel(staged)
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
