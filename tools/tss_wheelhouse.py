"""Offline wheels of the TotalSpineSeg environment for the Kaggle kernel (internet off).

    python tools/tss_wheelhouse.py --venv .tss-venv --out wheelhouse/tss [--python 3.10 3.11]

Takes the exact, tested package set of the TotalSpineSeg venv (``pip freeze``), minus what the
Kaggle GPU image already provides and must not be replaced (torch, torchvision, triton, the
CUDA wheels), downloads each as a Linux x86-64 binary wheel for the given Python versions, and
builds the pure-Python ones that exist only as sdists (e.g. ``acvl_utils``) locally. Writes
``OUT/requirements-tss.lock``. In the kernel (docs/totalspineseg.md):

    python -m venv --system-site-packages /kaggle/working/tss-venv
    /kaggle/working/tss-venv/bin/pip install --no-index --find-links WHEELS/tss \\
        -r WHEELS/tss/requirements-tss.lock
    export RSNA_TSS_BIN=/kaggle/working/tss-venv/bin/totalspineseg

The venv sees the image's torch (``--system-site-packages``) but keeps its own timm<1.0.23,
so the kit's timm in the main environment is untouched.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

PROVIDED = re.compile(
    r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|pip|setuptools|rsna-lumbar)$")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")


def frozen(venv: Path) -> list[str]:
    """``name==version`` of every distribution in the venv except those Kaggle provides."""
    code = ("import importlib.metadata as m\n"
            "for d in m.distributions(): print(f\"{d.metadata['Name']}=={d.version}\")")
    # (not `pip freeze`: it leaves out some installed distributions, e.g. argparse)
    out = subprocess.run([str(venv.resolve() / "bin" / "python"), "-c", code], check=True,
                         capture_output=True, text=True, cwd="/").stdout  # no ./*.egg-info
    specs = []
    for line in sorted(set(out.splitlines()), key=str.lower):
        name = line.split("==")[0].strip().lower().replace("_", "-")
        if "==" in line and not PROVIDED.match(name):
            specs.append(line.strip())
    return specs


def pure(venv: Path, spec: str) -> bool:
    """Whether the venv's installed ``spec`` is a pure-Python distribution."""
    name = spec.split("==")[0].lower().replace("-", "_")
    site = next((venv / "lib").glob("python*/site-packages"))
    for info in site.glob("*.dist-info"):
        if info.name.lower().startswith(name + "-"):
            wheel = (info / "WHEEL").read_text() if (info / "WHEEL").is_file() else ""
            return "Root-Is-Purelib: true" in wheel
    return False


def download(spec: str, out: Path, python: str) -> bool:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--implementation", "cp", "--python-version", python, "-d", str(out), spec]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path(".tss-venv"))
    parser.add_argument("--out", type=Path, default=Path("wheelhouse/tss"))
    parser.add_argument("--python", nargs="+", default=["3.11"])
    args = parser.parse_args(argv)
    if not (args.venv / "bin" / "python").is_file():
        sys.exit(f"no TotalSpineSeg venv at {args.venv}: run `make tss-env` first")
    args.out.mkdir(parents=True, exist_ok=True)
    specs = frozen(args.venv)
    missing: dict[str, list[str]] = {}
    for spec in specs:
        for py in args.python:
            if not download(spec, args.out, py):
                missing.setdefault(spec, []).append(py)
    built = []
    for spec, pythons in missing.items():  # no binary wheel: build it here if pure Python
        if len(pythons) != len(args.python) or not pure(args.venv, spec):
            sys.exit(f"no binary wheel of {spec} for Python {', '.join(pythons)}: choose the "
                     "Kaggle image's Python with --python (e.g. 3.11), or rebuild the TSS venv "
                     "with that Python")
        rc = subprocess.run([str(args.venv / "bin" / "python"), "-m", "pip", "wheel", "--quiet",
                             "--no-deps", "-w", str(args.out), spec]).returncode
        if rc != 0:
            sys.exit(f"could not build a wheel of {spec}")
        built.append(spec)
    lock = args.out / "requirements-tss.lock"
    lock.write_text("# TotalSpineSeg env for Kaggle (torch from the image)\n" + "\n".join(specs)
                    + "\n")
    print(f"{len(specs)} packages ({len(built)} built locally) in {args.out}; lock: {lock}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
