"""The official metric: hand-computed cases, sklearn agreement, an independent literal transcription
of Kaggle's step-by-step ``score`` with scikit-learn 1.2.2's ``log_loss`` (docs/metric-and-submission.md),
completeness and ``subset``, the CLI, and the training-loss equivalence."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import xlogy
from sklearn.metrics import log_loss

from conftest import make_train_frame
from rsna_lumbar.cli import main
from rsna_lumbar.metric import (
    IncompleteSubmissionError,
    any_severe_log_loss,
    score_submission,
    weighted_log_loss,
)
from rsna_lumbar.tables import labels_long
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, TARGET_COLUMNS, study_row_ids

LEVELS = ["normal_mild", "moderate", "severe"]


def random_submission(row_ids, seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([2.0, 1.0, 0.7], size=len(row_ids))
    return pd.DataFrame({"row_id": row_ids, "normal_mild": p[:, 0], "moderate": p[:, 1], "severe": p[:, 2]})


def all_rows(train):
    return [r for s in train["study_id"] for r in study_row_ids(s)]


# --- The reference, written here from docs/metric-and-submission.md; nothing shared with rsna_lumbar.metric.


def sklearn_122_log_loss(y_true, y_pred, sample_weight):
    """scikit-learn 1.2.2's ``log_loss`` (eps='auto', normalize=True), step by step. ``y_true`` is
    one-hot (n, k) or binary (n,); a binary y_true with one label is scored over labels [0, 1]
    (1.2.2 raises there; the kit documents scoring it instead)."""
    y_pred = np.asarray(y_pred, dtype=np.float64)
    eps = np.finfo(y_pred.dtype).eps
    y_pred = np.clip(y_pred, eps, 1 - eps)
    if y_pred.ndim == 1:
        y_pred = y_pred[:, np.newaxis]
    if y_pred.shape[1] == 1:
        y_pred = np.append(1 - y_pred, y_pred, axis=1)
    transformed = np.asarray(y_true, dtype=np.float64)
    if transformed.ndim == 1:
        transformed = transformed[:, np.newaxis]
        transformed = np.append(1 - transformed, transformed, axis=1)
    y_pred_sum = y_pred.sum(axis=1)
    y_pred = y_pred / y_pred_sum[:, np.newaxis]
    loss = -xlogy(transformed, y_pred).sum(axis=1)
    return np.average(loss, weights=sample_weight)


def kaggle_score(solution, submission, row_id_column_name, any_severe_scalar):
    """Kaggle's ``score`` as docs/metric-and-submission.md describes it; returns the four terms too."""
    solution, submission = solution.copy(), submission.copy()
    for column in LEVELS:
        if not pd.api.types.is_numeric_dtype(submission[column]):
            raise ValueError(f"Submission column {column} must be a number")
    if not np.isfinite(submission[LEVELS].values).all():
        raise ValueError("All submission values must be finite")
    if solution[LEVELS].min().min() < 0 or submission[LEVELS].min().min() < 0:
        raise ValueError("All labels and predictions must be at least zero")
    row_ids = solution[row_id_column_name]
    solution["study_id"] = row_ids.apply(lambda x: x.split("_")[0])
    solution["location"] = row_ids.apply(lambda x: "_".join(x.split("_")[1:]))
    solution["condition"] = row_ids.apply(
        lambda x: [c for c in ("spinal", "foraminal", "subarticular") if c in x][0]
    )
    del solution[row_id_column_name]
    del submission[row_id_column_name]
    assert sorted(submission.columns) == sorted(LEVELS)
    for column in ("study_id", "location", "condition"):
        submission[column] = solution[column]
    losses, weights = {}, []
    for condition in ("spinal", "foraminal", "subarticular"):
        index = solution.loc[solution["condition"] == condition].index.values
        losses[condition] = sklearn_122_log_loss(
            y_true=solution.loc[index, LEVELS].values,
            y_pred=submission.loc[index, LEVELS].values,
            sample_weight=solution.loc[index, "sample_weight"].values,
        )
        weights.append(1)
    spinal_solution = solution.loc[solution["condition"] == "spinal"].groupby("study_id")
    labels = spinal_solution["severe"].max()
    sample_weight = spinal_solution["sample_weight"].max()
    spinal_submission = submission.loc[submission["condition"] == "spinal"].groupby("study_id")
    predictions = spinal_submission["severe"].max()
    losses["any_severe_spinal"] = sklearn_122_log_loss(
        y_true=labels.values, y_pred=predictions.values, sample_weight=sample_weight.values
    )
    weights.append(any_severe_scalar)
    losses["score"] = float(np.average(list(losses.values()), weights=weights))
    return losses


def kaggle_reference(train, submission, studies=None):
    """Labelled cells of ``train`` (of ``studies``) as Kaggle's solution; both frames sorted by
    row_id with a fresh index, then :func:`kaggle_score`."""
    grades = {"Normal/Mild": 0, "Moderate": 1, "Severe": 2}
    rows = []
    for _, record in train.iterrows():
        if studies is not None and record["study_id"] not in studies:
            continue
        for column in (c for c in train.columns if c != "study_id"):
            if isinstance(record[column], str):
                y = grades[record[column]]
                rows.append((f"{record['study_id']}_{column}", *np.eye(3, dtype=int)[y], 2**y))
    solution = pd.DataFrame(rows, columns=["row_id", *LEVELS, "sample_weight"])
    solution = solution.sort_values("row_id").reset_index(drop=True)
    submission = submission[submission["row_id"].isin(solution["row_id"])]
    submission = submission.sort_values("row_id").reset_index(drop=True)
    assert submission["row_id"].tolist() == solution["row_id"].tolist()
    return kaggle_score(solution, submission, "row_id", 1.0)


def assert_matches_reference(result, reference):
    for key, value in reference.items():
        assert getattr(result, key) == pytest.approx(value, rel=1e-12), key


def test_reference_log_loss_is_sklearn_on_normalised_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=100)
    p = rng.dirichlet([1, 1, 1], size=100)
    assert sklearn_122_log_loss(np.eye(3)[y], p, 2.0**y) == pytest.approx(
        log_loss(np.eye(3)[y], p, sample_weight=2.0**y), rel=1e-12
    )
    q = rng.random(50)
    b = rng.integers(0, 2, size=50)
    assert sklearn_122_log_loss(b, q, None) == pytest.approx(log_loss(b, q), rel=1e-12)


def test_hand_computed_single_study():
    # One study, spinal only labelled: L1/L2 Normal, L2/L3 Moderate, L3/L4 Severe.
    train = pd.DataFrame([{"study_id": 7, **{c: None for c in TARGET_COLUMNS}}])
    train["spinal_canal_stenosis_l1_l2"] = "Normal/Mild"
    train["spinal_canal_stenosis_l2_l3"] = "Moderate"
    train["spinal_canal_stenosis_l3_l4"] = "Severe"
    sub = pd.DataFrame({"row_id": study_row_ids(7)})
    sub[["normal_mild", "moderate", "severe"]] = [0.5, 0.3, 0.2]
    sub.loc[2, ["normal_mild", "moderate", "severe"]] = [0.1, 0.1, 0.8]  # L3/L4
    result = score_submission(train, sub)
    # Weighted mean: (1·−ln .5 + 2·−ln .3 + 4·−ln .8) / 7
    spinal = (-math.log(0.5) - 2 * math.log(0.3) - 4 * math.log(0.8)) / 7
    assert result.spinal == pytest.approx(spinal, abs=1e-12)
    # any severe: label 1, weight 4, prediction max severe = 0.8 → −ln 0.8
    assert result.any_severe_spinal == pytest.approx(-math.log(0.8), abs=1e-12)
    assert math.isnan(result.foraminal) and math.isnan(result.subarticular)
    assert result.score == pytest.approx((spinal - math.log(0.8)) / 2)
    assert result.rows_scored == 3 and result.studies_scored == 1
    assert result.rows_unscored == 22 and not result.subset


def test_any_severe_hand_computed_two_studies():
    # Study 1: worst Moderate (label 0, weight 2), max severe 0.3; study 2: Severe (1, 4), 0.6.
    loss = any_severe_log_loss(
        np.array([1, 1, 2]), np.array([1, 0, 2]), np.array([0.3, 0.1, 0.6])
    )
    expected = (2 * -math.log(0.7) + 4 * -math.log(0.6)) / 6
    assert loss == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_group_loss_agrees_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=200)
    p = rng.dirichlet([1, 1, 1], size=200)
    expected = log_loss(np.eye(3)[y], p, sample_weight=2.0**y)
    assert weighted_log_loss(y, p) == pytest.approx(expected, rel=1e-12)


def _unnormalised(sub, rng):
    sub[LEVELS] *= rng.uniform(0.3, 3.0, size=len(sub))[:, None]


def _all_zero_rows(sub, rng):
    spinal = np.flatnonzero(sub["row_id"].str.contains("spinal"))
    foraminal = np.flatnonzero(sub["row_id"].str.contains("foraminal"))
    sub.loc[[spinal[0], spinal[7], foraminal[3]], LEVELS] = 0.0


def _severe_above_one(sub, rng):
    spinal = np.flatnonzero(sub["row_id"].str.contains("spinal"))
    picked = rng.choice(spinal, size=len(spinal) // 4, replace=False)
    sub.loc[picked, "severe"] = rng.uniform(1.0, 3.0, size=picked.size)


@pytest.mark.parametrize("alter", [None, _unnormalised, _all_zero_rows, _severe_above_one])
@pytest.mark.parametrize("seed", range(2))
def test_full_score_equals_kaggle_reference(alter, seed):
    train = make_train_frame(30, seed=seed, missing=0.05)
    sub = random_submission(all_rows(train), seed)
    if alter is not None:
        alter(sub, np.random.default_rng(seed + 100))
    assert_matches_reference(score_submission(train, sub), kaggle_reference(train, sub))


def test_rows_aligned_by_row_id_not_position(train_frame):
    sub = random_submission(all_rows(train_frame), 3)
    shuffled = sub.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert score_submission(train_frame, shuffled).score == pytest.approx(
        score_submission(train_frame, sub).score, rel=1e-12
    )
    # A positional misalignment would change the score: prove the shuffle matters.
    misaligned = sub.copy()
    misaligned[["normal_mild", "moderate", "severe"]] = shuffled[["normal_mild", "moderate", "severe"]].to_numpy()
    assert score_submission(train_frame, misaligned).score != pytest.approx(
        score_submission(train_frame, sub).score, rel=1e-6
    )


def test_missing_labels_are_not_scored(train_frame):
    row_ids = all_rows(train_frame)
    sub = random_submission(row_ids, 4)
    base = score_submission(train_frame, sub)
    # Changing predictions of rows whose label is missing changes nothing.
    missing = set(row_ids) - set(labels_long(train_frame)["row_id"])
    assert missing
    altered = sub.copy()
    mask = altered["row_id"].isin(missing)
    altered.loc[mask, ["normal_mild", "moderate", "severe"]] = [1e-9, 1e-9, 1.0]
    assert score_submission(train_frame, altered).as_dict() == base.as_dict()
    assert base.rows_scored == len(row_ids) - len(missing)
    assert base.rows_unscored == len(missing)
    # Unlabelled rows may be left out, and rows of a study train.csv lacks are not scored either.
    extra = pd.concat([sub[~mask], random_submission(study_row_ids(1), 0)], ignore_index=True)
    result = score_submission(train_frame, extra)
    assert result.score == base.score and result.rows_unscored == 25


def test_single_class_subset_does_not_crash():
    train = make_train_frame(5, seed=0, missing=0.0)
    for column in TARGET_COLUMNS:
        train[column] = "Normal/Mild"
    sub = random_submission(all_rows(train), 0)
    result = score_submission(train, sub)
    assert np.isfinite(result.score) and np.isfinite(result.any_severe_spinal)


def test_scaled_rows_change_only_the_any_severe_term(train_frame):
    # Groups divide each clipped row by its sum, so shrinking rows leaves them unchanged; the
    # any-severe term takes the raw severe column, so it moves (as on Kaggle).
    sub = random_submission(all_rows(train_frame), 5)
    scaled = sub.copy()
    scaled[LEVELS] *= np.linspace(0.3, 1.0, len(sub))[:, None]
    base, result = score_submission(train_frame, sub), score_submission(train_frame, scaled)
    for term in ("spinal", "foraminal", "subarticular"):
        assert getattr(result, term) == pytest.approx(getattr(base, term), rel=1e-12)
    assert abs(result.any_severe_spinal - base.any_severe_spinal) > 1e-3
    # Values above 1 are clipped to 1 − eps before the division, so growing rows moves groups too.
    grown = sub.copy()
    grown[LEVELS] *= 3.0
    assert score_submission(train_frame, grown).spinal != pytest.approx(base.spinal, rel=1e-3)


def test_all_zero_row_is_scored_as_uniform():
    train = make_train_frame(3, seed=0, missing=0.0)
    sub = random_submission(all_rows(train), 0)
    zero, third = sub.copy(), sub.copy()
    zero.loc[5, LEVELS] = 0.0
    third.loc[5, LEVELS] = 1 / 3
    assert score_submission(train, zero).foraminal == pytest.approx(
        score_submission(train, third).foraminal, rel=1e-12
    )


def test_perfect_and_extreme_predictions_are_clipped_not_infinite(train_frame):
    labels = labels_long(train_frame)
    onehot = np.eye(3)[labels["severity"].to_numpy()]
    wrong = pd.DataFrame({"row_id": labels["row_id"], "normal_mild": onehot[:, 1],
                          "moderate": onehot[:, 2], "severe": onehot[:, 0]})
    result = score_submission(train_frame, wrong)
    assert np.isfinite(result.score) and result.score > 30  # −ln(eps) ≈ 36


def test_bad_submissions_raise(train_frame):
    sub = random_submission(all_rows(train_frame), 0)
    with pytest.raises(ValueError, match="duplicate row_id"):
        score_submission(train_frame, pd.concat([sub, sub.iloc[:1]]))
    for value, message in ((np.nan, "non-finite"), (np.inf, "non-finite"), (-0.1, "negative")):
        bad = sub.copy()
        bad.loc[0, "severe"] = value
        with pytest.raises(ValueError, match=message):
            score_submission(train_frame, bad)
    text = sub.copy()
    text["moderate"] = text["moderate"].astype(str)
    with pytest.raises(ValueError, match="'moderate' is not numeric"):
        score_submission(train_frame, text)
    with pytest.raises(ValueError, match="no submission row has a label"):
        score_submission(train_frame, random_submission(study_row_ids(1), 0), subset=True)


def test_missing_rows_are_refused_with_a_count():
    train = make_train_frame(5, seed=3, missing=0.0)
    studies = train["study_id"].tolist()
    sub = random_submission(all_rows(train), 0)
    kept = sub[~sub["row_id"].str.split("_").str[0].astype(int).isin(studies[1:3])]
    first = f"{studies[1]}_{TARGET_COLUMNS[0]}"
    with pytest.raises(IncompleteSubmissionError) as caught:
        score_submission(train, kept)
    message = str(caught.value)
    assert message.startswith(f"submission lacks 50 labelled rows of 2 studies (first: {first}, ")
    assert "pass --subset" in message and "\n" not in message
    with pytest.raises(IncompleteSubmissionError, match=r"lacks 1 labelled row of 1 study \(first"):
        score_submission(train, sub.iloc[1:])


def test_subset_scores_the_held_studies_only():
    train = make_train_frame(5, seed=3, missing=0.05)
    studies = train["study_id"].tolist()
    held = {studies[0], studies[3]}
    sub = random_submission([r for s in sorted(held) for r in study_row_ids(s)], 1)
    _unnormalised(sub, np.random.default_rng(2))
    result = score_submission(train, sub, subset=True)
    assert_matches_reference(result, kaggle_reference(train, sub, studies=held))
    assert result.subset and result.studies_scored == 2 and result.studies_labelled == 5
    with pytest.raises(IncompleteSubmissionError, match="of 3 studies"):
        score_submission(train, sub)
    # A row missing inside a held study is still refused.
    labelled = set(labels_long(train)["row_id"])
    gap = sub[sub["row_id"] != next(r for r in sub["row_id"] if r in labelled)]
    with pytest.raises(IncompleteSubmissionError, match="lacks 1 labelled row .*study it holds"):
        score_submission(train, gap, subset=True)


def test_cli_refuses_missing_rows_and_scores_a_subset(tmp_path, capsys):
    train = make_train_frame(5, seed=3, missing=0.0)
    train.to_csv(tmp_path / "train.csv", index=False)
    studies = train["study_id"].tolist()
    sub = random_submission([r for s in studies[:2] for r in study_row_ids(s)], 0)
    sub.to_csv(tmp_path / "oof.csv", index=False)
    args = ["score", "--labels", str(tmp_path / "train.csv"),
            "--submission", str(tmp_path / "oof.csv")]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("rsna-lumbar score: error: submission lacks 75 labelled rows of 3 ")
    assert main([*args, "--subset"]) == 0
    out = capsys.readouterr().out
    assert "subset: 2 of 5 labelled studies" in out and "0 submission rows without a label" in out
    assert main([*args, "--subset", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["subset"] is True and result["studies_scored"] == 2


def test_weighted_cross_entropy_equals_group_loss():
    """The training loss is the metric: CrossEntropyLoss(weight=[1,2,4]) == a group's loss."""
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(300, 3)) * 2)
    y = torch.tensor(rng.integers(0, 3, size=300))
    ce = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    metric = weighted_log_loss(y.numpy(), torch.softmax(logits, dim=1).numpy())
    assert ce(logits, y).item() == pytest.approx(metric, rel=1e-9)


def test_bootstrap_resamples_score_like_the_scorer_and_pair_the_submissions():
    from rsna_lumbar.metric import bootstrap_scores

    rng = np.random.default_rng(3)
    studies = [11, 22, 33, 44]
    train = pd.DataFrame({"study_id": studies, **{c: rng.choice(
        ["Normal/Mild", "Moderate", "Severe"], size=4, p=[0.6, 0.3, 0.1]) for c in TARGET_COLUMNS}})
    rows = [f"{s}_{c}" for s in studies for c in TARGET_COLUMNS]
    good = pd.DataFrame({"row_id": rows, **dict(zip(PROBABILITY_COLUMNS, rng.dirichlet([4, 2, 1], len(rows)).T))})
    flat = good.assign(**{c: 1 / 3 for c in PROBABILITY_COLUMNS})
    scores = bootstrap_scores(train, {"good": good, "flat": flat}, resamples=40, seed=1)
    assert scores["good"].shape == (40,) and np.isfinite(scores["good"]).all()
    assert np.allclose(scores["flat"], np.log(3) * 1.0, atol=0.35)  # uniform: ln 3 per group
    # one resample done by hand: the same draw, a study drawn twice counted twice
    drawn = np.random.default_rng(1).choice(4, size=4, replace=True)
    labels = train.iloc[drawn].assign(study_id=[k + 1 for k in range(4)])
    parts = [good[good.row_id.str.startswith(f"{studies[i]}_")].assign(
        row_id=lambda f, k=k, i=i: f.row_id.str.replace(f"{studies[i]}_", f"{k + 1}_", n=1, regex=False))
        for k, i in enumerate(drawn)]  # fmt: skip
    assert scores["good"][0] == pytest.approx(score_submission(labels, pd.concat(parts)).score)
