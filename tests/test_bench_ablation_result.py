"""The ablation result file (bench/ablation_result.py) sets each variant beside the Bayes floor."""

import json
import sys

import pandas as pd
import pytest
from conftest import make_train_frame

from rsna_lumbar.metric import score_submission
from rsna_lumbar.priors import class_priors, prior_submission
from rsna_lumbar.tables import read_train
from rsna_lumbar.training.oof import LOGIT_COLUMNS
from test_bench_calibration_forms import _oof


def _labelled_data(tmp_path, seed):
    """A competition folder of 30 studies whose "Bayes" probabilities are the class prior."""
    data = tmp_path / "data"
    (data / "truth").mkdir(parents=True)
    make_train_frame(30, seed=seed).to_csv(data / "train.csv", index=False)
    train = read_train(data / "train.csv")
    prior_submission(class_priors(train), train.study_id.tolist()).to_csv(
        data / "truth" / "bayes_train.csv", index=False)
    return data, train


def _ablate(run, train, scales):
    """What ``ablate`` leaves: a folder per variant with its OOF logits (the true grade named at
    logit ±2 over two folds, times the variant's scale), and ``comparison.csv`` (score = scale)."""
    confident = _oof(train, wrong_share=0.0)
    for variant, scale in scales.items():
        (run / variant).mkdir(parents=True)
        frame = confident.copy()
        frame[list(LOGIT_COLUMNS)] *= scale
        frame.to_csv(run / variant / "oof_logits.csv", index=False)
    pd.DataFrame([{"variant": v, "score": s} for v, s in scales.items()]).to_csv(
        run / "comparison.csv", index=False)


def test_each_variant_is_set_beside_the_bayes_floor_of_the_same_labels(tmp_path):
    from bench.ablation_result import ablation_tables

    data, train = _labelled_data(tmp_path, seed=2)
    expected = score_submission(train, prior_submission(class_priors(train),
                                                        train.study_id.tolist())).score
    for seed, score in (("seed42", 0.5), ("seed43", 0.6)):
        (tmp_path / seed).mkdir()
        pd.DataFrame([{"variant": "baseline", "score": score, "score_localised": 2 * score}]).to_csv(
            tmp_path / seed / "comparison.csv", index=False)
    result = ablation_tables(data, {s: tmp_path / s for s in ("seed42", "seed43")})
    assert abs(result["bayes_floor"]["score"] - expected) < 1e-4
    row = result["runs"]["seed43"][0]
    assert row["variant"] == "baseline" and abs(row["ratio_to_floor"] - 0.6 / expected) < 1e-3
    assert abs(row["ratio_to_floor_localised"] - 1.2 / expected) < 1e-3


def test_variants_are_paired_with_the_baseline_fold_by_fold(tmp_path):
    from bench.ablation_result import ablation_tables

    data, train = _labelled_data(tmp_path, seed=3)
    run = tmp_path / "run"
    # a second seed: its baseline sharper than the first seed's, its variant blunter than both
    _ablate(run, train, {"baseline": 0.25, "sharper": 1.0, "baseline_seed43": 0.5,
                         "sharper_seed43": 0.3})
    result = ablation_tables(data, {"seed42": run})
    folds = result["per_fold"]["seed42"]
    assert len(folds["baseline"]["labelled"]) == 2 and "localised" not in folds["baseline"]
    difference = result["paired"]["seed42"]["sharper"]["labelled"]
    assert difference["mean"] < 0 and all(d < 0 for d in difference["folds"])  # right more surely
    assert abs(difference["mean"] - (sum(folds["sharper"]["labelled"]) - sum(folds["baseline"]["labelled"])) / 2) < 1e-3
    # seed against seed: the seed-43 variant is worse than its own baseline, better than seed 42's
    same_seed = result["paired_same_seed"]["seed42"]
    assert set(same_seed) == {"sharper_seed43"}
    assert same_seed["sharper_seed43"]["against"] == "baseline_seed43"
    assert same_seed["sharper_seed43"]["labelled"]["mean"] > 0
    assert result["paired"]["seed42"]["sharper_seed43"]["labelled"]["mean"] < 0


@pytest.mark.parametrize("variant, expected", [
    ("ema_seed43", "baseline_seed43"), ("x_seed1_seed43", "baseline_seed43"),
    ("baseline_seed43", None), ("baseline", None), ("ema", None), ("ema_seed", None),
    ("ema_seedling", None), ("_seed43", None)])
def test_a_seed_variant_finds_the_baseline_of_its_seed(variant, expected):
    from bench.ablation_result import same_seed_baseline

    assert same_seed_baseline(variant) == expected


def test_an_earlier_result_file_keeps_the_variants_whose_folders_are_gone(tmp_path, monkeypatch, capsys):
    from bench.ablation_result import ablation_tables, main

    data, train = _labelled_data(tmp_path, seed=4)
    _ablate(tmp_path / "first", train, {"baseline": 0.25, "blunt": 0.1, "sharp": 1.0})
    earlier = ablation_tables(data, {"draw": tmp_path / "first"})
    # later: the folders are gone; the baseline runs again beside a new variant
    _ablate(tmp_path / "later", train, {"baseline": 0.25, "sharper_seed43": 2.0})
    result = ablation_tables(data, {"draw": tmp_path / "later"}, keep=earlier)
    assert [row["variant"] for row in result["runs"]["draw"]] == [
        "blunt", "sharp", "baseline", "sharper_seed43"]
    folds = result["per_fold"]["draw"]
    assert folds["blunt"] == earlier["per_fold"]["draw"]["blunt"]
    assert set(result["paired"]["draw"]) == {"blunt", "sharp", "sharper_seed43"}
    assert result["paired"]["draw"]["blunt"] == earlier["paired"]["draw"]["blunt"]
    assert result["paired"]["draw"]["sharper_seed43"]["labelled"]["mean"] < 0
    assert result["paired_same_seed"]["draw"] == {}  # no baseline_seed43, kept or fresh
    # the command line: --keep anywhere among the arguments
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    monkeypatch.setattr(sys, "argv", ["ablation_result", str(tmp_path / "out.json"), str(data),
                                      "CMD", "--keep", str(tmp_path / "earlier.json"),
                                      f"draw={tmp_path / 'later'}"])
    main()
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["command"] == "CMD" and written["runs"] == result["runs"]
    assert written["paired"] == result["paired"]

    # a run the earlier file lacks is new, paired with its own baseline; one not named again is kept
    _ablate(tmp_path / "again", train, {"baseline": 0.3, "blunt": 0.1})
    both = ablation_tables(data, {"again": tmp_path / "again"}, keep=earlier)
    assert "run 'again' is new (the earlier file's runs: ['draw'])" in capsys.readouterr().err
    assert list(both["runs"]) == ["draw", "again"]
    assert both["runs"]["draw"] == earlier["runs"]["draw"]
    assert both["per_fold"]["draw"] == earlier["per_fold"]["draw"]
    assert both["paired"]["draw"] == earlier["paired"]["draw"]
    assert [row["variant"] for row in both["runs"]["again"]] == ["baseline", "blunt"]
    assert set(both["paired"]["again"]) == {"blunt"}
    assert both["paired"]["again"]["blunt"] != earlier["paired"]["draw"]["blunt"]  # its own baseline
    # two runs of the baseline: every other variant also against their fold-by-fold mean
    mean = {p: [(a + b) / 2 for a, b in zip(earlier["per_fold"]["draw"]["baseline"][p],
                                            both["per_fold"]["again"]["baseline"][p])]
            for p in earlier["per_fold"]["draw"]["baseline"]}  # fmt: skip
    against_mean = both["paired_baselines_mean"]
    assert set(against_mean["draw"]) == {"blunt", "sharp"} and set(against_mean["again"]) == {"blunt"}
    for run, variant in (("draw", "sharp"), ("again", "blunt")):
        for p, diff in against_mean[run][variant].items():
            expected = [s - m for s, m in zip(both["per_fold"][run][variant][p], mean[p])]
            assert diff["folds"] == pytest.approx(expected, abs=2e-4)
    assert "paired_baselines_mean" not in result  # one baseline run: nothing to average
    other_labels = {**earlier, "bayes_floor": {**earlier["bayes_floor"], "score": 0.1}}
    with pytest.raises(ValueError, match="another draw's labels"):
        ablation_tables(data, {"draw": tmp_path / "later"}, keep=other_labels)
