"""The official RSNA 2024 LSDC metric, computed exactly as Kaggle's ``score`` function does.

Following the host's metric notebook (competition-facts §1; Kaggle ``metric/rsna-lumbar-metric-71549``):

1. Rows are aligned by ``row_id`` (not by position). Rows whose label is missing in ``train.csv``
   are not scored, as on Kaggle.
2. Each scored row's sample weight is 1, 2 or 4 for a true Normal/Mild, Moderate or Severe.
3. For each group — spinal (5 rows per study), foraminal (10), subarticular (10) — the loss is the
   weighted mean ``Σ w·(−log p_true) / Σ w``.
4. ``any_severe_spinal``: per study, the label is whether any scored spinal level is Severe, the
   weight is the largest spinal row weight, the prediction is the largest ``severe`` probability
   over the study's spinal rows; the loss is the weighted binary log loss over studies.
5. ``score`` is the mean of the four (``any_severe_scalar`` = 1.0).

Normalisation and clipping — which scikit-learn we reproduce. Kaggle's 2024 image pinned
scikit-learn 1.2.2, whose ``log_loss`` clips predictions to ``[eps, 1 − eps]`` (float64 eps) and
then divides each row by its sum; scikit-learn ≥ 1.5 clips only. We first divide each submitted
row by its sum (as the community's local evaluator does, so unnormalised rows are scored as the
probabilities they imply), then apply 1.2.2's clip-and-renormalise. For rows that already sum to 1
— every submission this kit writes — both scikit-learn behaviours agree to within eps, and the
``severe`` column used by the any-severe term is the raw submitted one.

Unlike scikit-learn (which raises "y_true contains only one label"), a subset in which every study
has the same any-severe label is scored by the same formula instead of crashing — small local
folds hit this.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from rsna_lumbar.tables import labels_long
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, SAMPLE_WEIGHTS, Family, parse_row_id

LOGGER = logging.getLogger(__name__)
EPS = float(np.finfo(np.float64).eps)
GROUPS: tuple[Family, ...] = (Family.SPINAL, Family.FORAMINAL, Family.SUBARTICULAR)


@dataclasses.dataclass(frozen=True)
class MetricResult:
    """The official score and its four terms (all weighted log losses; lower is better)."""

    score: float
    spinal: float
    foraminal: float
    subarticular: float
    any_severe_spinal: float
    rows_scored: int
    studies_scored: int

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def normalise_rows(probabilities: np.ndarray) -> np.ndarray:
    """Divide each row of an (N, 3) array by its sum, then clip and renormalise like sklearn 1.2.2."""
    p = np.asarray(probabilities, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    p = np.clip(p, EPS, 1 - EPS)
    return p / p.sum(axis=1, keepdims=True)


def weighted_log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """One group's loss: ``Σ w_i·(−log p_i[y_i]) / Σ w_i`` with w = 1, 2, 4 by true class.

    Args:
        labels: (N,) class indices 0/1/2.
        probabilities: (N, 3) predicted probabilities (normalised by :func:`normalise_rows`).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return float("nan")
    p = normalise_rows(probabilities)
    weights = np.asarray(SAMPLE_WEIGHTS)[labels]
    losses = -np.log(p[np.arange(labels.size), labels])
    return float(np.sum(weights * losses) / np.sum(weights))


def any_severe_log_loss(
    study_ids: np.ndarray, labels: np.ndarray, severe_probabilities: np.ndarray
) -> float:
    """The any_severe_spinal term over spinal rows.

    Args:
        study_ids: (N,) study of each spinal row.
        labels: (N,) class indices 0/1/2 of the rows.
        severe_probabilities: (N,) the rows' ``severe`` probability.
    """
    if len(study_ids) == 0:
        return float("nan")
    frame = pd.DataFrame(
        {
            "study": np.asarray(study_ids),
            "severe": (np.asarray(labels) == 2).astype(np.float64),
            "weight": np.asarray(SAMPLE_WEIGHTS)[np.asarray(labels, dtype=np.int64)],
            "p": np.asarray(severe_probabilities, dtype=np.float64),
        }
    )
    per_study = frame.groupby("study", sort=True).max()
    y = per_study["severe"].to_numpy()
    w = per_study["weight"].to_numpy()
    q = np.clip(per_study["p"].to_numpy(), EPS, 1 - EPS)
    losses = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return float(np.sum(w * losses) / np.sum(w))


def score_frames(solution: pd.DataFrame, submission: pd.DataFrame) -> MetricResult:
    """Score aligned frames.

    Args:
        solution: columns ``row_id`` and ``severity`` (class index 0/1/2), one row per scored row.
        submission: columns ``row_id`` + :data:`PROBABILITY_COLUMNS`; may hold extra rows (those
            without a label are ignored, as Kaggle ignores rows with missing labels).

    Raises:
        ValueError: duplicated row ids, non-finite or negative probabilities, or no overlap.
    """
    if submission["row_id"].duplicated().any():
        duplicate = submission.loc[submission["row_id"].duplicated(), "row_id"].iloc[0]
        msg = f"submission has duplicate row_id {duplicate!r}; write each row once"
        raise ValueError(msg)
    values = submission[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        msg = "submission has non-finite probabilities (NaN or inf); every row must be predicted"
        raise ValueError(msg)
    if (values < 0).any():
        msg = "submission has negative probabilities"
        raise ValueError(msg)
    merged = solution[["row_id", "severity"]].merge(submission, on="row_id", how="inner")
    if merged.empty:
        msg = "no submission row has a label: is the submission for a split that train.csv labels?"
        raise ValueError(msg)
    unscored = len(submission) - len(merged)
    if unscored:
        LOGGER.info("%d submission rows have no label and are not scored", unscored)
    merged = merged.sort_values("row_id", kind="stable").reset_index(drop=True)
    parsed = [parse_row_id(r) for r in merged["row_id"]]
    families = np.array([c.family.value for _, c, _ in parsed])
    studies = np.array([s for s, _, _ in parsed])
    labels = merged["severity"].to_numpy(dtype=np.int64)
    probs = merged[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64)
    terms = {}
    for family in GROUPS:
        mask = families == family.value
        terms[family.value] = weighted_log_loss(labels[mask], probs[mask])
    spinal = families == Family.SPINAL.value
    row_sums = probs[spinal].sum(axis=1)
    terms["any_severe_spinal"] = any_severe_log_loss(
        studies[spinal], labels[spinal], probs[spinal, 2] / row_sums
    )
    present = [v for v in terms.values() if np.isfinite(v)]
    if len(present) < len(terms):
        LOGGER.warning("some metric terms have no scored rows: %s", terms)
    return MetricResult(
        score=float(np.mean(present)),
        rows_scored=len(merged),
        studies_scored=len(np.unique(studies)),
        **terms,
    )


def score_submission(train: pd.DataFrame, submission: pd.DataFrame) -> MetricResult:
    """Score a submission frame against a ``train.csv`` frame (see :func:`rsna_lumbar.tables.read_train`)."""
    return score_frames(labels_long(train), submission)
