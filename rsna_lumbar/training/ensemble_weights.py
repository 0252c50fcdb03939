"""Ensemble weights fitted out of fold, used only where they beat the plain mean out of fold.

The members' out-of-fold probabilities (submission format: ``row_id`` and the three grade
columns) are mixed with weights on the simplex (a softmax of free parameters) chosen to minimise
the official metric on the labelled rows. Fitted and scored on the same rows they would always
look better than the mean, so the comparison is cross-fitted: each fold's rows are mixed with
the weights fitted on the other folds' rows, and that score is set against the mean's on the
same rows. :func:`choose_weights` keeps the weights fitted on every row only when the
cross-fitted mix scored lower by :data:`MARGIN` or more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from rsna_lumbar.metric import score_frames
from rsna_lumbar.tables import labels_long
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS

COLUMNS = list(PROBABILITY_COLUMNS)
MARGIN = 1e-3  # a cross-fitted gain smaller than this is no reason to leave the mean


def mixed(frames: list[pd.DataFrame], weights) -> pd.DataFrame:
    """The weighted mean of the members' probabilities, rows in ``row_id`` order."""
    aligned = [f.set_index("row_id").sort_index()[COLUMNS] for f in frames]
    if any(not a.index.equals(aligned[0].index) for a in aligned[1:]):
        raise ValueError("the members' out-of-fold rows differ: mix only frames of the same rows")
    total = sum(w * f.to_numpy() for w, f in zip(np.asarray(weights, float), aligned))
    out = pd.DataFrame(total / float(np.sum(weights)), columns=COLUMNS, index=aligned[0].index)
    return out.reset_index()


def _score(labels: pd.DataFrame, submission: pd.DataFrame) -> float:
    """The official score of ``submission``'s studies; ``labels`` from :func:`labels_long`."""
    return float(score_frames(labels, submission, subset=True).score)


def fit_weights(frames: list[pd.DataFrame], train: pd.DataFrame) -> np.ndarray:
    """Simplex weights (one per member, summing to 1) minimising the metric of the mix."""
    n = len(frames)
    if n == 1:
        return np.ones(1)
    labels = labels_long(train)

    def objective(z: np.ndarray) -> float:
        w = np.exp(z - z.max())
        return _score(labels, mixed(frames, w / w.sum()))

    start = np.vstack([np.zeros(n), np.eye(n)])  # steps of e in a weight ratio, not of 0.00025
    z = minimize(objective, np.zeros(n), method="Nelder-Mead",
                 options={"initial_simplex": start, "xatol": 1e-2, "fatol": 1e-5,
                          "maxiter": 200 * n}).x  # fmt: skip
    w = np.exp(z - z.max())
    return w / w.sum()


def choose_weights(frames: list[pd.DataFrame], train: pd.DataFrame, folds: pd.DataFrame) -> dict:
    """Fitted weights against the mean, cross-fitted over ``folds`` (``study_id``, ``fold``).

    Returns ``{"weights", "fitted", "fitted_score" (cross-fitted), "mean_score", "used"}``:
    ``weights`` are the fitted ones when their cross-fitted score is lower, else equal.
    """
    n = len(frames)
    equal = np.full(n, 1.0 / n)
    rows = frames[0][["row_id"]].copy()
    study = rows.row_id.str.split("_").str[0].astype(int)
    fold_of = folds.set_index("study_id").fold
    parts = []
    for fold in sorted(folds.fold.unique()):
        inside = study.map(fold_of).eq(fold).to_numpy()
        held = rows.row_id[inside]
        others = [f[~f.row_id.isin(held)] for f in frames]
        w = fit_weights(others, train[~train.study_id.isin(set(study[inside]))])
        parts.append(mixed([f[f.row_id.isin(held)] for f in frames], w))
    labels = labels_long(train)
    fitted_score = _score(labels, pd.concat(parts))
    in_folds = study.isin(set(fold_of.index)).to_numpy()  # the rows the cross-fit mixed
    mean_score = _score(labels, mixed([f[f.row_id.isin(rows.row_id[in_folds])] for f in frames], equal))
    fitted = fit_weights(frames, train)
    better = fitted_score < mean_score - MARGIN
    return {"weights": [round(float(w), 4) for w in (fitted if better else equal)],
            "fitted": [round(float(w), 4) for w in fitted], "fitted_score": round(fitted_score, 5),
            "mean_score": round(mean_score, 5), "used": "fitted" if better else "mean"}
