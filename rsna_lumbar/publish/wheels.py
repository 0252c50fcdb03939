"""The offline wheelhouse the kernel installs from: the kit's wheel and the packages Kaggle's
image lacks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rsna_lumbar.publish import PublishError

REQUIREMENTS_FILE = "kaggle-requirements.txt"  # written into the wheelhouse; the kernel installs it
OPTIONAL_FILE = "kaggle-optional.txt"  # compiled wheels the kernel installs best effort
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
