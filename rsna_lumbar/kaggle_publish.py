"""Publish the kit to Kaggle: the offline wheelhouse, the weights dataset, the inference kernel.

The Make targets ``wheels``, ``push-weights``, ``push-kernel``, ``submit`` and ``kernel-status``
are thin wrappers over ``python -m rsna_lumbar.kaggle_publish STEP`` (``wheels``,
``stage-weights``, ``push-weights``, ``stage-kernel``, ``push-kernel``, ``submit``,
``kernel-status``).

Guards (each says what to do):

- ``push-weights`` publishes only model folders (sub-folders of ``weights/`` with ``model.json``
  or ``config.json``) whose ``provenance.json`` (:mod:`rsna_lumbar.provenance`) says they were
  trained on competition data; no model folder, a folder without provenance, or one trained on
  synthetic data is refused unless ``--allow-synthetic`` (Make: ``ALLOW_SYNTHETIC=1``). The
  staged ``weights/MANIFEST.json`` lists each folder's provenance for the kernel to print.
- ``push-kernel`` first waits (``kaggle datasets status``) until the weights dataset's current
  version is ready, so the kernel never runs against a version still being processed.
- ``push-kernel`` records the kernel version Kaggle reports in ``OUT/pushed.json``; ``submit``
  submits that version (or ``--kernel-version N``) with ``kaggle competitions submit -k -v``.

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
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rsna_lumbar import __version__
from rsna_lumbar.inference.ensemble import read_ensemble
from rsna_lumbar.provenance import SYNTHETIC, read_provenance

PLACEHOLDER_OWNER = "your-kaggle-username"
COMPETITION = "rsna-2024-lumbar-spine-degenerative-classification"
DATASET_METADATA = "dataset-metadata.json"
KERNEL_DIR = "kernels"
KERNEL_METADATA = "kernel-metadata.json"
REQUIREMENTS_FILE = "kaggle-requirements.txt"  # written into the wheelhouse; the kernel installs it
OPTIONAL_FILE = "kaggle-optional.txt"  # compiled wheels the kernel installs best effort
WEIGHTS_MANIFEST = "MANIFEST.json"  # in the staged weights/: each model folder's provenance
PUSH_RECORD = "pushed.json"  # written into the staged kernel folder after a push: kernel + version
SUBMISSION_FILE = "submission.csv"  # what the kernel writes and the competition scores
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
    """Write the two install lists the kernel reads; returns ``kaggle-requirements.txt``.

    ``kaggle-requirements.txt``: ``name==version`` of every pure-Python wheel (``-none-any``:
    the kit, pydicom), which install on any Python, so the kernel installs them strictly.
    ``kaggle-optional.txt``: the compiled ones (the JPEG codecs), one wheel per Python version;
    the kernel installs each best effort, so a Python they have no wheel for costs only the
    DICOMs that need them, never the submission.
    """
    found: dict[str, str] = {}
    compiled: set[str] = set()
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        key = _norm(name)
        if found.setdefault(key, version) != version:
            msg = (f"{wheelhouse} holds two versions of {key} ({found[key]}, {version}): "
                   "run 'make wheels' to rebuild it from scratch.")
            raise PublishError(msg)
        if not wheel.name.endswith("-none-any.whl"):
            compiled.add(key)
    if _norm(KIT_DIST) not in found:
        raise PublishError(f"no rsna_lumbar wheel in {wheelhouse}: run 'make wheels'.")
    for filename, keys in ((REQUIREMENTS_FILE, sorted(set(found) - compiled)),
                           (OPTIONAL_FILE, sorted(compiled))):
        text = "".join(f"{key}=={found[key]}\n" for key in keys)
        (wheelhouse / filename).write_text(text, encoding="utf-8")
    return wheelhouse / REQUIREMENTS_FILE


def make_wheelhouse(root: Path, wheelhouse: Path, download: list[str] | None = None,
                    pythons: tuple[str, ...] = ("3.11", "3.12", "3.13")) -> Path:
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
    """Each model folder's provenance (None: none recorded), after the guards of the module doc.

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
    _write_json(out / "weights" / WEIGHTS_MANIFEST,
                {"kit_version": __version__, "allow_synthetic": allow_synthetic,
                 "models": records})
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
    """Run the kaggle CLI, echoing its output; ``check``: raise on failure."""
    cmd = [kaggle_executable(), *args]
    print("+ kaggle", shlex.join(args), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(done.stdout if done.stdout.endswith("\n") or not done.stdout
                     else done.stdout + "\n")  # some commands end without one
    sys.stderr.write(done.stderr)
    text = done.stdout + done.stderr
    failed = done.returncode != 0 or re.search(r"(creation|push) error", text)
    if check and failed:
        msg = f"'kaggle {shlex.join(args)}' failed (exit {done.returncode}); its output is above."
        raise PublishError(msg)
    return done


def dataset_status(ref: str) -> dict | None:
    """``{"status": "ready", "current_version_number": 3}`` from ``kaggle datasets status``;
    None when Kaggle has no dataset ``ref`` (404); raises otherwise."""
    done = _kaggle("datasets", "status", ref, "--format", "json", check=False)
    text = done.stdout + done.stderr
    if done.returncode != 0:
        if "404" in text or "not found" in text.lower():
            return None
        raise PublishError(f"'kaggle datasets status {ref}' failed; its output is above.")
    try:  # the JSON is the last line; anything the CLI warns about comes before it
        return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    except (IndexError, ValueError):
        msg = f"'kaggle datasets status {ref}' printed no status; its output is above."
        raise PublishError(msg) from None


def dataset_exists(ref: str) -> bool:
    """True when ``kaggle datasets status`` finds ``ref``; False on 404; raises otherwise."""
    return dataset_status(ref) is not None


DATASET_FAILED = ("failed", "deleted")


def wait_for_dataset(ref: str, timeout: float = 900, interval: float = 15) -> int | None:
    """Poll ``kaggle datasets status`` until the current version of ``ref`` is ready (Kaggle
    processes a new version for a few minutes); returns its number. Raises when the dataset
    does not exist, its version failed, or it is still not ready after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        state = dataset_status(ref)
        if state is None:
            msg = f"the weights dataset {ref} is not on Kaggle: run 'make push-weights' first."
            raise PublishError(msg)
        status, version = state.get("status"), state.get("current_version_number")
        what = f"dataset {ref} version {version}"
        if status == "ready":
            print(f"{what} is ready", flush=True)
            return version
        if status in DATASET_FAILED:
            msg = (f"{what} is '{status}' on Kaggle: see the dataset's page, then run "
                   "'make push-weights' again.")
            raise PublishError(msg)
        if time.monotonic() >= deadline:
            msg = (f"{what} is still '{status}' after {timeout:g} s: rerun 'make push-kernel' "
                   "later, or wait longer with DATASET_WAIT=SECONDS.")
            raise PublishError(msg)
        print(f"{what} is '{status}': checking again in {interval:g} s", flush=True)
        time.sleep(interval)


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


def push_kernel(staged: Path, timeout: float = 900, interval: float = 15) -> int | None:
    """Wait for the weights dataset (:func:`wait_for_dataset`), push, and record the kernel
    version Kaggle reports in ``staged/pushed.json`` (for :func:`submit`); returns it."""
    meta = _load_json(staged / KERNEL_METADATA)
    weights = meta["dataset_sources"][0]
    dataset_version = wait_for_dataset(weights, timeout, interval)
    done = _kaggle("kernels", "push", "-p", str(staged))
    found = re.search(r"Kernel version (\d+) successfully", done.stdout)
    version = int(found[1]) if found else None
    _write_json(staged / PUSH_RECORD, {"kernel": meta["id"], "version": version,
                                       "dataset": weights, "dataset_version": dataset_version})
    return version


def pushed_version(staged: Path, kernel: str) -> int:
    """The version of ``kernel`` that the last ``push-kernel`` into ``staged`` recorded."""
    record = staged / PUSH_RECORD
    try:
        pushed = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pushed = {}
    if not isinstance(pushed, dict) or pushed.get("kernel") != kernel or not pushed.get("version"):
        msg = (f"{record} records no pushed version of {kernel}: run 'make push-kernel' first, or "
               "pass KERNEL_VERSION=N (the 'Kernel version N' that push printed).")
        raise PublishError(msg)
    return int(pushed["version"])


def submit(kernel: str, version: int, message: str, file_name: str = SUBMISSION_FILE) -> None:
    """Submit version ``version`` of ``kernel`` (``owner/slug``) to the competition: Kaggle
    reruns it on the hidden test set and scores its ``file_name``."""
    _kaggle("competitions", "submit", COMPETITION, "-k", kernel, "-v", str(version),
            "-f", file_name, "-m", message)


def kernel_status(kernel: str, version: int | None = None) -> None:
    """Print the state of ``kernel``'s latest run, or of version ``version``."""
    _kaggle("kernels", "status", f"{kernel}/{version}" if version else kernel)


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
    wheels.add_argument("--python", nargs="+", default=["3.11", "3.12", "3.13"],
                        help="the Pythons the Kaggle image may run (default: 3.11 3.12 3.13)")
    for step in ("stage-weights", "push-weights", "stage-kernel", "push-kernel", "submit",
                 "kernel-status"):
        p = sub.add_parser(step)
        p.add_argument("--owner", help="Kaggle user (default: KAGGLE_USERNAME or kaggle.json)")
        p.add_argument("--dataset", help="weights dataset slug (default: dataset-metadata.json)")
        if "weights" in step:
            p.add_argument("--weights", type=Path, help="model folders (default: ROOT/weights)")
            p.add_argument("--wheelhouse", type=Path, help="default: ROOT/wheelhouse")
            p.add_argument("--out", type=Path, default=Path("build/kaggle-dataset"))
            p.add_argument("--notes", help="version notes (default: kit version + git commit)")
            p.add_argument("--allow-synthetic", action="store_true",
                           help="publish even without competition-trained model folders")
            continue
        p.add_argument("--kernel", help="kernel slug (default: kernels/kernel-metadata.json)")
        p.add_argument("--out", type=Path, default=Path("build/kaggle-kernel"),
                       help="staged kernel folder (push-kernel records the version there)")
        if step == "push-kernel":
            p.add_argument("--wait-timeout", type=float, default=900, metavar="S",
                           help="wait this long for the weights dataset to be ready")
            p.add_argument("--wait-interval", type=float, default=15, metavar="S")
        if step in ("submit", "kernel-status"):
            p.add_argument("--kernel-version", type=int, metavar="N",
                           help="default: " + ("the version push-kernel recorded"
                                               if step == "submit" else "the latest run"))
        if step == "submit":
            p.add_argument("--message", help="default: kit version + git commit + kernel version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.root.resolve()
    try:
        if args.step == "wheels":
            req = make_wheelhouse(root, args.out, args.download, tuple(args.python))
            optional = (args.out / OPTIONAL_FILE).read_text().split()
            print(f"wheelhouse {args.out}: {', '.join(req.read_text().split())}; "
                  f"best effort: {', '.join(optional) or 'none'}")
            return 0
        owner = resolve_owner(args.owner)
        if args.step in ("stage-weights", "push-weights"):
            staged = stage_weights(root, args.out, owner, args.dataset, args.weights,
                                   args.wheelhouse, allow_synthetic=args.allow_synthetic)
            print(f"staged {staged}")
            if args.step == "push-weights":
                how = push_weights(staged, args.notes or version_notes(root))
                print(f"weights dataset: {how} done")
        elif args.step in ("stage-kernel", "push-kernel"):
            staged = stage_kernel(root, args.out, owner, args.kernel, args.dataset)
            print(f"staged {staged}")
            if args.step == "push-kernel":
                version = push_kernel(staged, args.wait_timeout, args.wait_interval)
                if version is None:
                    print("warning: Kaggle's answer named no kernel version: pass it to submit "
                          "yourself (make submit KERNEL_VERSION=N; N from 'make kernel-status')",
                          file=sys.stderr)
                else:
                    print(f"kernel version {version} pushed: 'make kernel-status' shows its "
                          "run; once it is complete, 'make submit' submits it")
        else:
            kernel = render_kernel_metadata(root, owner, args.kernel, args.dataset)["id"]
            if args.step == "kernel-status":
                kernel_status(kernel, args.kernel_version)
            else:
                version = args.kernel_version or pushed_version(args.out, kernel)
                message = args.message or f"{version_notes(root)}, kernel version {version}"
                submit(kernel, version, message)
                print(f"submitted {kernel} version {version}: Kaggle reruns it on the hidden test "
                      "set; the competition's 'Submissions' page shows the score")
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
