import numpy as np
import pandas as pd
import pytest

from conftest import make_train_frame
from rsna_lumbar.metric import score_submission
from rsna_lumbar.priors import class_priors, load_priors, prior_submission, save_priors, uniform_priors
from rsna_lumbar.submission import SubmissionError, build_submission, validate_submission, write_submission
from rsna_lumbar.vocabulary import TARGET_COLUMNS


def test_build_and_validate():
    rng = np.random.default_rng(0)
    probs = {11: rng.random((25, 3)) + 0.1, 3: rng.random((25, 3)) + 0.1}
    frame = build_submission(probs)
    assert len(frame) == 50
    assert frame["row_id"].iloc[0] == "3_spinal_canal_stenosis_l1_l2"
    assert frame["row_id"].iloc[24] == "3_right_subarticular_stenosis_l5_s1"
    np.testing.assert_allclose(frame[["normal_mild", "moderate", "severe"]].sum(axis=1), 1.0)
    validate_submission(frame, [3, 11])
    validate_submission(frame.iloc[:25], [3])


def test_validate_rejects_every_broken_contract():
    frame = build_submission({5: np.full((25, 3), 1 / 3)})
    validate_submission(frame, [5])
    with pytest.raises(SubmissionError, match="1 missing"):
        validate_submission(frame.iloc[1:], [5])
    with pytest.raises(SubmissionError, match="25 missing.*25 unexpected"):
        validate_submission(frame, [6])
    with pytest.raises(SubmissionError, match="expected 25 rows for each of 2 studies"):
        validate_submission(frame, [5, 6])
    with pytest.raises(SubmissionError, match="duplicate row_id"):
        validate_submission(pd.concat([frame, frame.iloc[:1]]), [5])
    bad = frame.copy()
    bad.loc[3, "severe"] = 0.5
    with pytest.raises(SubmissionError, match="1 rows are not probability vectors"):
        validate_submission(bad, [5])
    bad = frame.copy()
    bad.loc[3, "severe"] = np.nan
    with pytest.raises(SubmissionError, match="not probability vectors"):
        validate_submission(bad, [5])
    with pytest.raises(SubmissionError, match="columns"):
        validate_submission(frame[["row_id", "severe", "moderate", "normal_mild"]], [5])
    with pytest.raises(SubmissionError, match=r"shape \(25, 3\)"):
        build_submission({5: np.ones((24, 3))})


def test_write_is_atomic_and_validates_first(tmp_path):
    path = tmp_path / "submission.csv"
    good = build_submission({5: np.full((25, 3), 1 / 3)})
    write_submission(good, path, [5])
    before = path.read_bytes()
    assert before.startswith(b"row_id,normal_mild,moderate,severe\n")
    with pytest.raises(SubmissionError):
        write_submission(good.iloc[:10], path, [5])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]  # no temp files left
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, like a plain write


def _score(train, priors):
    return score_submission(train, prior_submission(priors, train["study_id"]))


def test_prior_counts_and_round_trip(tmp_path):
    train = make_train_frame(400, seed=2)
    column = TARGET_COLUMNS[0]
    n = [(train[column] == g).sum() + 1 for g in ("Normal/Mild", "Moderate", "Severe")]
    plain = class_priors(train, weighted=False)
    weighted = class_priors(train)
    assert plain.shape == weighted.shape == (25, 3)
    np.testing.assert_allclose(plain[0], np.array(n) / sum(n))
    np.testing.assert_allclose(weighted[0], np.array([1, 2, 4]) * n / np.dot([1, 2, 4], n))
    save_priors(weighted, tmp_path / "priors.json")
    np.testing.assert_allclose(load_priors(tmp_path / "priors.json"), weighted)


def test_weighted_prior_is_the_best_constant_and_beats_uniform():
    train = make_train_frame(400, seed=2, missing=0)
    weighted = class_priors(train, pseudo_count=0)
    plain = class_priors(train, weighted=False, pseudo_count=0)
    best = _score(train, weighted)
    # Per-group terms are minimised exactly by p ∝ w·n: any perturbation is worse in-sample.
    rng = np.random.default_rng(0)
    for _ in range(5):
        other = weighted * np.exp(rng.normal(0, 0.05, weighted.shape))
        other /= other.sum(axis=1, keepdims=True)
        assert _score(train, other).foraminal > best.foraminal
        assert _score(train, other).subarticular > best.subarticular
    held_out = make_train_frame(200, seed=3)
    assert _score(held_out, class_priors(train)).score < _score(held_out, uniform_priors()).score
    # Plain frequencies lose to uniform on the real class balance: why the default is weighted.
    assert _score(held_out, plain).score > _score(held_out, uniform_priors()).score
