"""The Kaggle inference kernel, run locally: the kit's wheel, an offline install, dry runs.

Each dry run executes kernels/rsna_lumbar_inference.py unchanged against a fake /kaggle tree
(RSNA_KAGGLE_ROOT) in a throwaway venv with no network (proxies point nowhere, pip has no
index): it installs the kit from the staged weights dataset and runs predict. The weights are
the reduced demo's (conftest ``demo``): a real localiser and severity model folder.

What must never happen is a silent run: outside Kaggle's scoring rerun a run that is not worth
submitting (no weights, corrupt weights) exits non-zero; in the scoring rerun
(KAGGLE_IS_COMPETITION_RERUN set) the same runs exit 0 with every row written. A GPU the models
cannot use and a codec with no wheel for this Python are survived and said.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from kaggle_dry_run import (KERNEL, REPO, offline_env, run_kernel, run_summary, stage_kaggle,
                            submission_rows)

from rsna_lumbar.publish.metadata import COMPETITION, KERNEL_METADATA
from rsna_lumbar.publish.wheels import REQUIREMENTS_FILE


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """``python -m rsna_lumbar.publish wheels`` (kit only, offline) into a tmp dir."""
    out = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run([sys.executable, "-m", "rsna_lumbar.publish", "--root", str(REPO),
                           "wheels", "--out", str(out)], capture_output=True, text=True,
                          env=offline_env(), cwd=out)
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
    assert (wheelhouse / REQUIREMENTS_FILE).read_text().split() == ["rsna-lumbar==0.1.0"]


@pytest.fixture(scope="module")
def kernel_study_ids(demo) -> list[int]:
    from rsna_lumbar.tables import split_study_ids

    plan, _ = demo
    return split_study_ids(plan.work / "data", "test")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, wheelhouse, venv, demo):
    """The kernel on trained weights; the wheelhouse also lists a codec with no wheel here.

    torch reports a GPU, as Kaggle's cu128 torch does on a P100, but every CUDA call fails (this
    machine has no driver), so the run also shows the smoke test sending the work to the CPU
    (the kernel without any GPU: tests/test_kaggle_image.py and the scoring reruns below)."""
    plan, _ = demo
    root = tmp_path_factory.mktemp("kaggle")
    dataset = stage_kaggle(root, wheelhouse, plan.weights, plan.work / "data")
    (dataset / "wheels" / "kaggle-optional.txt").write_text("pylibjpeg-libjpeg==2.4.0\n")
    fake = tmp_path_factory.mktemp("fake-gpu")
    (fake / "sitecustomize.py").write_text("import torch\ntorch.cuda.is_available = lambda: True\n")
    return root, run_kernel(venv / "bin" / "python", root, PYTHONPATH=str(fake))


def test_dry_run_writes_a_complete_submission_from_the_models(dry_run, kernel_study_ids, demo):
    root, done = dry_run
    assert done.returncode == 0, done.stdout + done.stderr
    submission_rows(root, kernel_study_ids)
    sub = root / "working" / "submission.csv"
    assert f"wrote {sub}: {25 * len(kernel_study_ids)} rows; predict exit status 0" in done.stdout
    assert "--no-index" in done.stdout  # installed offline, from the attached wheels
    assert "kit imports: ok" in done.stdout
    summary = run_summary(root)
    assert summary["problems"] == [] and summary["coverage"] >= 0.7
    assert [m["status"] for m in summary["members"]] == ["used"]
    plan, demo_summary = demo  # the kernel predicts what the demo's own predict did
    with open(demo_summary["submission"], newline="") as f:
        expected = {r[0]: [float(x) for x in r[1:]] for r in list(csv.reader(f))[1:]}
    for row in submission_rows(root, kernel_study_ids):
        assert [float(x) for x in row[1:]] == pytest.approx(expected[row[0]], abs=1e-5)
    assert sorted(p.name for p in (root / "working").iterdir()) == [
        "submission.csv", "submission_summary.json"], "scratch must not land in the output folder"
    # the budget counts from the kernel's own start, so installing and importing count too
    started = float(done.stdout.split("--started-at ", 1)[1].split()[0])
    assert summary["budget"]["started_at"] == pytest.approx(started)
    assert summary["budget"]["elapsed_s"] > sum(summary["stages_s"].values())
    assert summary["warnings"] == [  # the demo's weights are synthetic-trained: said, not fatal
        f"member {m['path']} was trained on synthetic data (provenance.json)"
        for m in summary["members"]]


def test_a_codec_without_a_wheel_for_this_python_is_skipped_and_said(dry_run):
    _, done = dry_run
    assert "warning: pylibjpeg-libjpeg==2.4.0 has no wheel for this Python" in done.stdout


def test_dry_run_installed_the_wheel_into_the_kernel_env(dry_run, venv):
    done = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import rsna_lumbar; print(rsna_lumbar.__file__)"],
                          capture_output=True, text=True, cwd=venv, env=offline_env())
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(venv), done.stdout
    script = subprocess.run([str(venv / "bin" / "rsna-lumbar"), "--version"],
                            capture_output=True, text=True, cwd=venv, env=offline_env())
    assert script.returncode == 0 and script.stdout.strip() == "rsna-lumbar 0.1.0", script


def _weights_without_models(demo, folder: Path, corrupt: bool) -> Path:
    """The demo's priors only (corrupt=False), or its folders with every tensor file broken."""
    plan, _ = demo
    if corrupt:
        shutil.copytree(plan.weights, folder)
        for tensor in folder.rglob("*.safetensors"):
            tensor.write_bytes(b"not a tensor file")
    else:
        folder.mkdir()
        shutil.copy(plan.weights / "priors.json", folder)
    return folder


@pytest.mark.parametrize(("corrupt", "rerun"), [
    pytest.param(False, False, id="empty-weights-commit-run"),
    pytest.param(True, True, id="corrupt-weights-scoring-rerun"),
    # the other two pairs: the same decision after the same zero coverage (make test-all)
    pytest.param(False, True, id="empty-weights-scoring-rerun", marks=pytest.mark.slow),
    pytest.param(True, False, id="corrupt-weights-commit-run", marks=pytest.mark.slow)])
def test_weights_that_cannot_predict_fail_loudly_except_in_the_scoring_rerun(
        tmp_path, wheelhouse, venv, demo, kernel_study_ids, corrupt, rerun):
    plan, _ = demo
    weights = _weights_without_models(demo, tmp_path / "weights", corrupt)
    root = tmp_path / "kaggle"
    stage_kaggle(root, wheelhouse, weights, plan.work / "data")
    done = run_kernel(venv / "bin" / "python", root, rerun=rerun)
    submission_rows(root, kernel_study_ids)  # every row, in both cases
    summary = run_summary(root)
    assert summary["coverage"] == 0 and summary["problems"]
    if rerun:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "scoring rerun: True" in done.stdout
    else:
        assert done.returncode != 0, done.stdout + done.stderr
        assert "not fit to submit" in done.stderr
        assert "predict exit status 3, 75 rows" in done.stderr


def test_a_gpu_the_models_cannot_use_is_seen_and_the_cpu_predicts(dry_run):
    """The dry run's GPU fails every CUDA call: the smoke test catches it and the CPU does the
    work (the submission it wrote: the test above)."""
    root, done = dry_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fails the CUDA smoke test" in done.stderr
    summary = run_summary(root)
    assert summary["device"]["device"] == "cpu"
    assert summary["device"]["note"].startswith("GPU unusable, CUDA smoke test failed")


@pytest.mark.parametrize("rerun", [False, True], ids=["commit-run", "scoring-rerun"])
def test_a_kit_that_cannot_install_fails_the_commit_run_but_the_rerun_writes_priors(
        tmp_path, wheelhouse, venv, demo, kernel_study_ids, rerun):
    """The kit's wheel is damaged, so nothing of the kit runs: the commit run stops with the
    reason; the scoring rerun still writes every row, from weights/priors.json."""
    plan, _ = demo
    root = tmp_path / "kaggle"
    dataset = stage_kaggle(root, wheelhouse, plan.weights, plan.work / "data")
    (kit_wheel,) = (dataset / "wheels").glob("rsna_lumbar-*.whl")
    kit_wheel.write_bytes(b"not a wheel")
    done = run_kernel(venv / "bin" / "python", root, rerun=rerun)
    assert "installing the kit from wheels/ failed" in done.stderr
    if not rerun:
        assert done.returncode != 0 and "not fit to submit" in done.stderr
        assert not (root / "working" / "submission.csv").exists()
        return
    assert done.returncode == 0, done.stdout + done.stderr
    rows = submission_rows(root, kernel_study_ids)
    priors = json.loads((plan.weights / "priors.json").read_text())
    for row in rows:
        target = row[0].split("_", 1)[1]
        assert [float(x) for x in row[1:]] == pytest.approx(
            [priors[target][c] for c in ("normal_mild", "moderate", "severe")])


def test_kernel_without_the_weights_dataset_says_what_to_attach(tmp_path, venv):
    (tmp_path / "input" / COMPETITION).mkdir(parents=True)
    done = subprocess.run([str(venv / "bin" / "python"), str(KERNEL)], capture_output=True,
                          text=True, cwd=tmp_path, env=offline_env(RSNA_KAGGLE_ROOT=str(tmp_path)))
    assert done.returncode != 0
    assert "wheels/kaggle-requirements.txt" in done.stderr and "kernels/README.md" in done.stderr


def test_kernel_script_is_a_thin_shim():
    text = KERNEL.read_text()
    assert len(text.splitlines()) <= 85
    assert all(name in text for name in ("/kaggle", "RSNA_KAGGLE_ROOT",
                                         "KAGGLE_IS_COMPETITION_RERUN"))
    meta = json.loads((REPO / "kernels" / KERNEL_METADATA).read_text())
    assert meta["code_file"] == KERNEL.name
