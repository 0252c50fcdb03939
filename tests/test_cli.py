"""The command line as users run it: a real subprocess of ``python -m rsna_lumbar``."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import make_train_frame
from rsna_lumbar.cli import COMMANDS, main
from rsna_lumbar.tables import read_sample_submission


def cli(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "rsna_lumbar", *map(str, args)], capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(f"rc={result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    root = tmp_path_factory.mktemp("competition")
    train = make_train_frame(80, seed=5)
    train.to_csv(root / "train.csv", index=False)
    rows = []
    for split, studies in (("train", train["study_id"]), ("test", [111, 222, 333])):
        for study in studies:
            for k, description in enumerate(("Sagittal T1", "Sagittal T2/STIR", "Axial T2")):
                rows.append((split, int(study), int(study) * 10 + k, description))
    series = pd.DataFrame(rows, columns=["split", "study_id", "series_id", "series_description"])
    for split, frame in series.groupby("split"):
        frame.drop(columns="split").to_csv(root / f"{split}_series_descriptions.csv", index=False)
    return root


def test_help_reads_well():
    top = cli("--help").stdout
    for name in COMMANDS:
        assert name in top
    score_help = cli("score", "--help").stdout
    assert "--labels TRAIN_CSV" in score_help and "--submission SUB_CSV" in score_help
    assert "any_severe_spinal" in score_help and "example:" in score_help
    for name in COMMANDS:  # in this process: the entry point itself ran above
        with pytest.raises(SystemExit) as stopped:
            main([name, "--help"])
        assert stopped.value.code == 0


def test_baseline_then_score_json(competition, tmp_path):
    sub = tmp_path / "prior.csv"
    cli("baseline", "--data", competition, "--split", "train", "--out", sub,
        "--priors-out", tmp_path / "weights" / "priors.json")
    frame = read_sample_submission(sub)
    assert len(frame) == 80 * 25
    result = json.loads(cli("score", "--labels", competition / "train.csv", "--submission", sub, "--json").stdout)
    assert {"score", "spinal", "foraminal", "subarticular", "any_severe_spinal"} <= set(result)
    assert 0.3 < result["score"] < 1.1
    table = cli("score", "--labels", competition / "train.csv", "--submission", sub).stdout
    assert "any_severe_spinal" in table and f"{result['score']:.4f}" in table


def test_predict_falls_back_to_priors_for_every_study(competition, tmp_path):
    weights = tmp_path / "weights"
    cli("baseline", "--data", competition, "--split", "test", "--out", tmp_path / "b.csv",
        "--priors-out", weights / "priors.json")
    out = tmp_path / "submission.csv"
    run = cli("predict", "--data", competition, "--split", "test", "--out", out, "--models", weights)
    assert "class priors from" in run.stderr
    frame = read_sample_submission(out)
    assert len(frame) == 3 * 25
    assert frame.equals(read_sample_submission(tmp_path / "b.csv"))
    run = cli("predict", "--data", competition, "--split", "test", "--out", out, "--models", tmp_path / "none")
    assert "uniform" in run.stderr
    assert read_sample_submission(out)["severe"].tolist() == pytest.approx([1 / 3] * 75)


def test_bad_input_is_one_clear_line(competition, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("row_id,normal_mild,moderate,severe\n123_spinal_canal_stenosis_l1_l9,1,0,0\n")
    run = cli("score", "--labels", competition / "train.csv", "--submission", bad, check=False)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert f"{bad}, line 2: row_id='123_spinal_canal_stenosis_l1_l9': malformed row_id" in run.stderr
    run = cli("predict", "--data", tmp_path / "nowhere", "--split", "test", "--out", tmp_path / "x.csv", check=False)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "test_series_descriptions.csv: series descriptions file not found" in run.stderr


def test_folds_cli_skips_existing(competition, tmp_path):
    out = tmp_path / "folds.csv"
    cli("folds", "--labels", competition / "train.csv", "--out", out, "--k", "4")
    first = out.read_text()
    run = cli("folds", "--labels", competition / "train.csv", "--out", out, "--k", "4", "--seed", "1")
    assert "exists; keeping it" in run.stderr and out.read_text() == first
    cli("folds", "--labels", competition / "train.csv", "--out", out, "--k", "4", "--seed", "1", "--force")
    assert out.read_text() != first
