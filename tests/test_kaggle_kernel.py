"""The Kaggle inference kernel, run locally: the kit's wheel, an offline install, a dry run.

The dry run executes kernels/rsna_lumbar_inference.py unchanged against a fake /kaggle tree
(RSNA_KAGGLE_ROOT) in a throwaway venv: it must install the kit from the staged weights dataset
with pip --no-index and write a complete submission, with no network (proxies point nowhere).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from rsna_lumbar import kaggle_publish as kp
from rsna_lumbar.vocabulary import study_row_ids

REPO = Path(__file__).resolve().parents[1]
KERNEL = REPO / "kernels" / "rsna_lumbar_inference.py"
HEADER = ["row_id", "normal_mild", "moderate", "severe"]


def _offline_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("PYTHONPATH", "NO_PROXY", "PIP_FIND_LINKS", "PIP_INDEX_URL")}
    dead = "http://127.0.0.1:9"  # nothing listens: any network use fails fast
    env.update(HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead,
               PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", **extra)
    return env


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """``python -m rsna_lumbar.kaggle_publish wheels`` (kit only, offline) into a tmp dir."""
    out = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run([sys.executable, "-m", "rsna_lumbar.kaggle_publish", "--root", str(REPO),
                           "wheels", "--out", str(out)], capture_output=True, text=True,
                          env=_offline_env(), cwd=out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A throwaway venv that sees this environment's packages but not its rsna_lumbar install.

    A plain path line in a .pth file exposes the dependencies (torch, pandas, pip itself); it does
    not run the editable-install hook of the dev venv, so ``import rsna_lumbar`` only works after
    the kernel has installed the wheel.
    """
    path = tmp_path_factory.mktemp("kernel-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(path), "platbase": str(path)})["purelib"])
    (site / "_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path


def test_wheelhouse_holds_the_kit_wheel_and_its_requirements(wheelhouse):
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert wheels == ["rsna_lumbar-0.1.0-py3-none-any.whl"]
    assert (wheelhouse / kp.REQUIREMENTS_FILE).read_text().split() == ["rsna-lumbar==0.1.0"]


def _fake_competition(folder: Path) -> list[int]:
    """A test split for the kernel: ``rsna-lumbar synth`` when it exists, else a bare CSV."""
    from rsna_lumbar.cli import COMMANDS

    if "synth" in COMMANDS:
        subprocess.run([sys.executable, "-m", "rsna_lumbar", "synth", "--out", str(folder),
                        "--studies", "2", "--seed", "0"], check=True, env=_offline_env(), cwd=REPO)
    else:  # two studies, empty image folders: predict must still write every row (priors)
        rows = [(4001, 11, "Sagittal T1"), (4001, 12, "Axial T2"), (4002, 21, "Sagittal T2/STIR")]
        for study, series, _ in rows:
            (folder / "test_images" / str(study) / str(series)).mkdir(parents=True)
        with open(folder / "test_series_descriptions.csv", "w", newline="") as f:
            csv.writer(f).writerows([("study_id", "series_id", "series_description"), *rows])
    with open(folder / "test_series_descriptions.csv", newline="") as f:
        return sorted({int(r["study_id"]) for r in csv.DictReader(f)})


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, wheelhouse, venv):
    """Stage the weights dataset as push-weights would, lay out /kaggle, run the kernel."""
    root = tmp_path_factory.mktemp("kaggle")
    dataset = kp.stage_weights(REPO, root / "input" / "rsna-lumbar-weights", "fakeuser",
                               wheelhouse=wheelhouse)
    (dataset / kp.DATASET_METADATA).unlink()  # Kaggle does not mount the metadata file
    studies = _fake_competition(root / "input" / kp.COMPETITION)
    (root / "working").mkdir()
    done = subprocess.run([str(venv / "bin" / "python"), str(KERNEL)], capture_output=True,
                          text=True, cwd=root / "working", timeout=300,
                          env=_offline_env(RSNA_KAGGLE_ROOT=str(root)))
    return root, studies, done


def test_dry_run_writes_a_complete_submission(dry_run):
    root, studies, done = dry_run
    assert done.returncode == 0, done.stdout + done.stderr
    sub = root / "working" / "submission.csv"
    with open(sub, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    expected = sorted(r for s in studies for r in study_row_ids(s))
    assert sorted(r[0] for r in rows[1:]) == expected
    assert len(rows) - 1 == 25 * len(studies)
    for r in rows[1:]:
        assert abs(sum(map(float, r[1:])) - 1) < 1e-5
    assert f"wrote {sub}: {25 * len(studies)} rows" in done.stdout
    assert "--no-index" in done.stdout  # installed offline, from the attached wheels


def test_dry_run_installed_the_wheel_into_the_kernel_env(dry_run, venv):
    done = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import rsna_lumbar; print(rsna_lumbar.__file__)"],
                          capture_output=True, text=True, cwd=venv, env=_offline_env())
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(venv), done.stdout
    script = subprocess.run([str(venv / "bin" / "rsna-lumbar"), "--version"],
                            capture_output=True, text=True, cwd=venv, env=_offline_env())
    assert script.returncode == 0 and script.stdout.strip() == "rsna-lumbar 0.1.0", script


def test_kernel_without_the_weights_dataset_says_what_to_attach(tmp_path, venv):
    (tmp_path / "input" / kp.COMPETITION).mkdir(parents=True)
    done = subprocess.run([str(venv / "bin" / "python"), str(KERNEL)], capture_output=True,
                          text=True, cwd=tmp_path, env=_offline_env(RSNA_KAGGLE_ROOT=str(tmp_path)))
    assert done.returncode != 0
    assert "wheels/kaggle-requirements.txt" in done.stderr and "kernels/README.md" in done.stderr


def test_kernel_script_is_a_thin_shim():
    text = KERNEL.read_text()
    assert len(text.splitlines()) <= 50
    assert "/kaggle" in text and "RSNA_KAGGLE_ROOT" in text
    meta = json.loads((REPO / "kernels" / kp.KERNEL_METADATA).read_text())
    assert meta["code_file"] == KERNEL.name
