"""The kernel on Kaggle's own stack: Python 3.12 with the image's package versions.

``make test-kaggle-image`` builds (once, cached) a venv of kernels/kaggle-image-requirements.txt
on Python 3.12 (torch 2.10, timm 1.0.26, numpy 2.0, pandas 2.2, ...) and runs this file with
``RSNA_KAGGLE_IMAGE_PYTHON`` pointing at it. The wheelhouse is what ``make wheels`` builds (the
kit's wheel, pydicom and the JPEG codecs for Python 3.11-3.13, downloaded from the registry);
then the kernel runs in a fresh venv layered on the image venv with the network closed and must
install everything offline and predict what the dev environment predicts.

Why 3.12 and not the newest Python here (3.13): it is the image's Python, and the image's numpy
2.0.2 and pandas 2.2.2 publish no 3.13 wheels, so "Kaggle's versions" exist only on 3.12. The
3.11 and 3.13 codec wheels are checked for presence below.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sysconfig
from pathlib import Path

import pytest
from kaggle_dry_run import REPO, offline_env, run_kernel, run_summary, stage_kaggle, submission_rows

IMAGE_PYTHON = os.environ.get("RSNA_KAGGLE_IMAGE_PYTHON")
pytestmark = [
    pytest.mark.kaggle_image,
    pytest.mark.skipif(not IMAGE_PYTHON,
                       reason="make test-kaggle-image sets RSNA_KAGGLE_IMAGE_PYTHON"),
]


def _python_version(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def kernel_python(tmp_path_factory) -> Path:
    """A fresh venv of the image's Python that sees the image venv's packages (a .pth line)."""
    path = tmp_path_factory.mktemp("image-kernel-venv")
    subprocess.run([IMAGE_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    image_site = subprocess.run([IMAGE_PYTHON, "-c", purelib],
                                capture_output=True, text=True, check=True).stdout.strip()
    version = _python_version(IMAGE_PYTHON)
    site = path / "lib" / f"python{version}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (site / "_kaggle_image.pth").write_text(image_site + "\n")
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """``make wheels`` into a tmp folder: the one step here that uses the package registry."""
    out = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run(["make", "-C", str(REPO), "wheels", f"WHEELHOUSE={out}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_wheelhouse_has_the_compiled_codecs_for_every_python_the_image_may_run(wheelhouse):
    """3.12 runs now, 3.13 if Kaggle follows Colab, 3.11 before: one wheel each, or the kernel
    on that Python skips the codec."""
    optional = (wheelhouse / "kaggle-optional.txt").read_text().split()
    assert {spec.split("==")[0] for spec in optional} == {"pylibjpeg-libjpeg", "pylibjpeg-openjpeg"}
    for spec in optional:
        name, version = spec.split("==")
        wheels = wheelhouse.glob(f"{name.replace('-', '_')}-{version}-*.whl")
        tags = {w.name.split("-")[2] for w in wheels}
        assert tags == {"cp311", "cp312", "cp313"}, (spec, tags)
    required = (wheelhouse / "kaggle-requirements.txt").read_text().split()
    assert {spec.split("==")[0] for spec in required} == {"pydicom", "pylibjpeg", "rsna-lumbar"}


def test_kernel_runs_on_kaggles_python_and_packages(tmp_path, kernel_python, wheelhouse, demo):
    plan, demo_summary = demo
    assert _python_version(str(kernel_python)) == "3.12"
    root = tmp_path / "kaggle"
    stage_kaggle(root, wheelhouse, plan.weights, plan.work / "data")
    done = run_kernel(kernel_python, root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "has no wheel for this Python" not in done.stdout  # the codecs have cp312 wheels
    summary = run_summary(root)
    assert summary["problems"] == [] and [m["status"] for m in summary["members"]] == ["used"]
    from rsna_lumbar.tables import split_study_ids

    rows = submission_rows(root, split_study_ids(plan.work / "data", "test"))
    with open(demo_summary["submission"], newline="") as f:
        expected = {r[0]: [float(x) for x in r[1:]] for r in list(csv.reader(f))[1:]}
    for row in rows:  # another torch, numpy and pandas: the same predictions, to rounding
        assert [float(x) for x in row[1:]] == pytest.approx(expected[row[0]], abs=2e-3)
    versions = subprocess.run(
        [str(kernel_python), "-c", "import torch, timm, numpy, pandas, pydicom, pylibjpeg; "
         "print(torch.__version__, timm.__version__, numpy.__version__, pandas.__version__)"],
        capture_output=True, text=True, env=offline_env())
    assert versions.returncode == 0, versions.stderr
    assert versions.stdout.split()[1:] == ["1.0.26", "2.0.2", "2.2.2"]
    assert versions.stdout.startswith("2.10.0")


def test_layered_venv_does_not_see_the_dev_environment(kernel_python):
    """The kernel venv must not import the dev venv's packages (pandas 3 there, 2.2 here)."""
    done = subprocess.run([str(kernel_python), "-c", "import pandas; print(pandas.__file__)"],
                          capture_output=True, text=True, env=offline_env())
    assert done.returncode == 0, done.stderr
    assert sysconfig.get_paths()["purelib"] not in done.stdout
