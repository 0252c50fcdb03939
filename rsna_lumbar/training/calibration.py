"""Per-family temperature scaling fitted on out-of-fold logits.

One temperature ``T_f`` per family (spinal, foraminal, subarticular): the network is shared by
the conditions of a family (left and right are the same mirrored model), so that is the level at
which its confidence can be off. ``T_f`` minimises the family's metric terms on the OOF rows the
network predicted: the weighted log loss of the group, plus, for spinal, the any_severe_spinal
term (the metric's other use of spinal probabilities). Prediction divides logits by ``T_f``.

:func:`cross_fitted` gives an honest calibrated OOF: fold ``k``'s rows get temperatures fitted
on the other folds only. :func:`choose_temperatures` keeps a family's temperature only where
that cross-fitted calibration lowered the family's OOF terms (else 1.0): with few, short-trained
folds the folds' logit scales can differ so much that a temperature does not transfer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from rsna_lumbar.metric import any_severe_log_loss, weighted_log_loss
from rsna_lumbar.models.forward import softmax
from rsna_lumbar.training.oof import LOGIT_COLUMNS

BOUNDS = (np.log(0.5), np.log(2.0))  # a temperature outside is a training problem, not calibration


def family_terms(rows: pd.DataFrame, probabilities: np.ndarray, family: str) -> float:
    """The family's metric terms of ``probabilities`` ``(N, 3)`` on the OOF ``rows`` (their
    ``label`` and ``study_id``): the group's weighted log loss, plus any_severe_spinal for spinal."""
    labels = rows["label"].to_numpy(np.int64)
    loss = weighted_log_loss(labels, probabilities)
    if family == "spinal":
        loss += any_severe_log_loss(rows["study_id"].to_numpy(), labels, probabilities[:, 2])
    return loss


def family_objective(frame: pd.DataFrame, family: str, temperature: float) -> float:
    """The family's metric terms on predicted, labelled rows at ``temperature``."""
    rows = frame[(frame.family == family) & (frame.predicted == 1) & (frame.label >= 0)]
    if rows.empty:
        return 0.0
    return family_terms(rows, softmax(rows[list(LOGIT_COLUMNS)].to_numpy(), temperature), family)


def fit_temperatures(frame: pd.DataFrame) -> dict[str, float]:
    """Family → temperature fitted on ``frame`` (1.0 where a family has no predicted labelled row)."""
    out = {}
    for family in sorted(frame.family.unique()):
        rows = frame[(frame.family == family) & (frame.predicted == 1) & (frame.label >= 0)]
        if rows.empty:
            out[family] = 1.0
            continue
        result = minimize_scalar(lambda z: family_objective(rows, family, float(np.exp(z))),
                                 bounds=BOUNDS, method="bounded", options={"xatol": 1e-3})
        out[family] = float(np.exp(result.x))
    return out


def cross_fitted(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, dict[str, float]]]:
    """Calibrated OOF logits where fold ``k`` uses temperatures fitted on the other folds."""
    frame = frame.copy()
    per_fold = {}
    folds = sorted(frame.fold.unique())
    for fold in folds:
        others = frame[frame.fold != fold] if len(folds) > 1 else frame
        temps = fit_temperatures(others)
        per_fold[int(fold)] = temps
        rows = (frame.fold == fold) & (frame.predicted == 1)
        t = frame.loc[rows, "family"].map(temps).to_numpy()[:, None]
        frame.loc[rows, list(LOGIT_COLUMNS)] = frame.loc[rows, list(LOGIT_COLUMNS)].to_numpy() / t
    return frame, per_fold


def choose_temperatures(raw: pd.DataFrame, calibrated: pd.DataFrame,
                        fitted: dict[str, float]) -> dict[str, float]:
    """``fitted`` where cross-fitted calibration helped the family out of fold, else 1.0."""
    out = {}
    for family, t in fitted.items():
        before = family_objective(raw, family, 1.0)
        after = family_objective(calibrated, family, 1.0)
        out[family] = t if after < before else 1.0
    return out
