"""The calibration-forms comparison (bench/calibration_forms.py) fits what it claims to fit."""

import numpy as np
import pandas as pd
from crop_factory import make_crop_cache

from rsna_lumbar.metric import score_submission
from rsna_lumbar.tables import read_train
from rsna_lumbar.training.oof import LOGIT_COLUMNS, submission_from_logits
from rsna_lumbar.vocabulary import SEVERITIES, TARGETS


def _oof(train: pd.DataFrame, wrong_share: float, seed: int = 0) -> pd.DataFrame:
    """OOF logits that name the true grade with confidence, except ``wrong_share`` of the rows,
    which name another grade as confidently (a crop on the wrong level)."""
    rng = np.random.default_rng(seed)
    records = []
    for n, row in enumerate(train.itertuples(index=False)):
        for condition, level in TARGETS:
            column = f"{condition.value}_{level.value}"
            value = getattr(row, column)
            label = -1 if pd.isna(value) else [s.value for s in SEVERITIES].index(value)
            named = label if label >= 0 and rng.random() > wrong_share else int(rng.integers(3))
            logits = np.full(3, -2.0)
            logits[named] = 2.0
            records.append((f"{row.study_id}_{column}", row.study_id, n % 2,
                            condition.family.value, 1, label, *logits))
    return pd.DataFrame(records, columns=["row_id", "study_id", "fold", "family", "predicted",
                                          "label", *LOGIT_COLUMNS])


def test_prior_mix_puts_a_floor_under_confidently_wrong_rows(tmp_path):
    from bench.calibration_forms import cross_fitted, fit

    _, train_csv, _ = make_crop_cache(tmp_path, n_studies=40, slices=3, size=16, k=2)
    train = read_train(train_csv)
    frame = _oof(train, wrong_share=0.2)
    raw = score_submission(train, submission_from_logits(frame), subset=True).score
    for share, least in ((0.2, 0.1), (0.0, None)):  # a floor only where grades are wrong
        rows = _oof(train, wrong_share=share)
        rows = rows[(rows.family == "foraminal") & (rows.label >= 0)]
        theta = fit("temperature_prior_mix", rows, np.full(3, 1 / 3), "foraminal")
        weight = 1 / (1 + np.exp(-theta[1]))
        assert weight > least if least else weight < 0.02
    mixed = cross_fitted(frame, train, "temperature_prior_mix")
    assert np.allclose(mixed[["normal_mild", "moderate", "severe"]].sum(axis=1), 1.0)
    assert sorted(mixed.row_id) == sorted(frame.row_id)
    assert score_submission(train, mixed, subset=True).score < raw - 0.05
    biased = cross_fitted(frame, train, "temperature_bias")
    assert score_submission(train, biased, subset=True).score < raw
