"""The ablation result file (bench/ablation_result.py) sets each variant beside the Bayes floor."""

import pandas as pd
from conftest import make_train_frame

from rsna_lumbar.metric import score_submission
from rsna_lumbar.priors import class_priors, prior_submission
from rsna_lumbar.tables import read_train


def test_each_variant_is_set_beside_the_bayes_floor_of_the_same_labels(tmp_path):
    from bench.ablation_result import ablation_tables

    data = tmp_path / "data"
    (data / "truth").mkdir(parents=True)
    train = make_train_frame(30, seed=2)
    train.to_csv(data / "train.csv", index=False)
    train = read_train(data / "train.csv")
    floor = prior_submission(class_priors(train), train.study_id.tolist())  # any probabilities
    floor.to_csv(data / "truth" / "bayes_train.csv", index=False)
    expected = score_submission(train, floor).score
    for seed, score in (("seed42", 0.5), ("seed43", 0.6)):
        (tmp_path / seed).mkdir()
        pd.DataFrame([{"variant": "baseline", "score": score, "score_localised": 2 * score}]).to_csv(
            tmp_path / seed / "comparison.csv", index=False)
    result = ablation_tables(data, {s: tmp_path / s for s in ("seed42", "seed43")})
    assert abs(result["bayes_floor"]["score"] - expected) < 1e-4
    row = result["runs"]["seed43"][0]
    assert row["variant"] == "baseline" and abs(row["ratio_to_floor"] - 0.6 / expected) < 1e-3
    assert abs(row["ratio_to_floor_localised"] - 1.2 / expected) < 1e-3


def _oof_logits(train, strength: float):
    """OOF logits naming each row's true grade with ``strength``, studies in two folds."""
    from rsna_lumbar.training.oof import LOGIT_COLUMNS
    from rsna_lumbar.vocabulary import SEVERITIES, TARGETS

    records = []
    for n, row in enumerate(train.itertuples(index=False)):
        for condition, level in TARGETS:
            column = f"{condition.value}_{level.value}"
            value = getattr(row, column)
            label = -1 if pd.isna(value) else [s.value for s in SEVERITIES].index(value)
            logits = [0.0, 0.0, 0.0]
            if label >= 0:
                logits[label] = strength
            records.append((f"{row.study_id}_{column}", row.study_id, n % 2, condition.family.value,
                            1, label, *logits))
    return pd.DataFrame(records, columns=["row_id", "study_id", "fold", "family", "predicted", "label",
                                          *LOGIT_COLUMNS])


def test_variants_are_paired_with_the_baseline_fold_by_fold(tmp_path):
    from bench.ablation_result import ablation_tables

    data = tmp_path / "data"
    (data / "truth").mkdir(parents=True)
    make_train_frame(30, seed=3).to_csv(data / "train.csv", index=False)
    train = read_train(data / "train.csv")
    prior_submission(class_priors(train), train.study_id.tolist()).to_csv(
        data / "truth" / "bayes_train.csv", index=False)
    run = tmp_path / "run"
    for variant, strength in (("baseline", 0.5), ("sharper", 2.0)):
        (run / variant).mkdir(parents=True)
        _oof_logits(train, strength).to_csv(run / variant / "oof_logits.csv", index=False)
    pd.DataFrame([{"variant": v, "score": 0.5} for v in ("baseline", "sharper")]).to_csv(
        run / "comparison.csv", index=False)
    result = ablation_tables(data, {"seed42": run})
    folds = result["per_fold"]["seed42"]
    assert len(folds["baseline"]["labelled"]) == 2 and "localised" not in folds["baseline"]
    difference = result["paired"]["seed42"]["sharper"]["labelled"]
    assert difference["mean"] < 0 and all(d < 0 for d in difference["folds"])  # right more surely
    assert abs(difference["mean"] - (sum(folds["sharper"]["labelled"]) - sum(folds["baseline"]["labelled"])) / 2) < 1e-3
