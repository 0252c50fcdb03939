"""The official RSNA 2024 LSDC metric, computed exactly as Kaggle's ``score`` function does.

Following the host's metric notebook (``docs/competition.md``; Kaggle ``metric/rsna-lumbar-metric-71549``)
with scikit-learn 1.2.2's ``log_loss``, the version pinned by Kaggle's 2024 image:

1. Rows are matched by ``row_id`` (not by position). Rows whose label is missing in ``train.csv``
   (or whose study it does not hold) are not scored, as on Kaggle; they are counted.
2. Each scored row's sample weight is 1, 2 or 4 for a true Normal/Mild, Moderate or Severe.
3. For each group — spinal (5 rows per study), foraminal (10), subarticular (10) — the submitted
   rows, exactly as written, are clipped to ``[eps, 1 − eps]`` (float64 eps), each row is divided
   by its sum, and the loss is the weighted mean ``Σ w·(−log p_true) / Σ w``. So an unnormalised
   row is scored as its clipped row over its clipped sum, and an all-zero row as uniform.
4. ``any_severe_spinal``: per study, the label is whether any scored spinal level is Severe, the
   weight is the largest spinal row weight, the prediction ``q`` is the largest *raw* submitted
   ``severe`` value over the study's scored spinal rows (not renormalised, so it may exceed 1);
   ``q`` is clipped to ``[eps, 1 − eps]``, expanded to ``[1 − q, q]`` and renormalised, and the
   loss is the weighted mean of ``−log`` of the true class over studies.
5. ``score`` is the mean of the four (``any_severe_scalar`` = 1.0).

Quality checks, as Kaggle's: non-numeric, non-finite or negative predictions and duplicated
``row_id`` s are refused (``ValueError``); values above 1 and rows not summing to 1 are allowed.
Completeness: a submission that lacks labelled rows is refused (:class:`IncompleteSubmissionError`,
counting them and naming the first few). With ``subset=True`` only the studies the submission
holds are scored (out-of-fold files), and rows missing inside those studies are still refused.

Deviations, for local subsets only: where scikit-learn raises "y_true contains only one label"
(every scored study has the same any-severe label — small folds hit this), the same formula is
evaluated instead; a group with no scored row is left out of the mean (its term is NaN).
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
MISSING_NAMED = 3  # how many missing row ids the completeness error names


class IncompleteSubmissionError(ValueError):
    """The submission lacks labelled rows of the studies it is scored on."""


@dataclasses.dataclass(frozen=True)
class MetricResult:
    """The official score and its four terms (all weighted log losses; lower is better).

    ``rows_unscored`` counts submission rows without a label; ``studies_labelled`` the studies with
    a label in the solution; ``subset`` whether only the submission's studies were scored.
    """

    score: float
    spinal: float
    foraminal: float
    subarticular: float
    any_severe_spinal: float
    rows_scored: int
    studies_scored: int
    rows_unscored: int
    studies_labelled: int
    subset: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return dataclasses.asdict(self)


def _log_loss(labels: np.ndarray, clipped: np.ndarray, weights: np.ndarray) -> float:
    """scikit-learn 1.2.2's ``log_loss`` after its clip: rows over their sums, weighted mean of
    ``−log p_true``."""
    p = clipped / clipped.sum(axis=1, keepdims=True)
    losses = -np.log(p[np.arange(labels.size), labels])
    return float(np.average(losses, weights=weights))


def weighted_log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """One group's loss: ``Σ w_i·(−log p_i[y_i]) / Σ w_i`` with w = 1, 2, 4 by true class.

    Args:
        labels: (N,) class indices 0/1/2.
        probabilities: (N, 3) predictions as submitted; clipped to ``[eps, 1 − eps]`` and each row
            divided by its sum, as scikit-learn 1.2.2 does.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return float("nan")
    clipped = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1 - EPS)
    return _log_loss(labels, clipped, np.asarray(SAMPLE_WEIGHTS)[labels])


def any_severe_log_loss(
    study_ids: np.ndarray, labels: np.ndarray, severe_probabilities: np.ndarray
) -> float:
    """The any_severe_spinal term over spinal rows.

    Args:
        study_ids: (N,) study of each spinal row.
        labels: (N,) class indices 0/1/2 of the rows.
        severe_probabilities: (N,) the rows' raw submitted ``severe`` values.
    """
    if len(study_ids) == 0:
        return float("nan")
    labels = np.asarray(labels, dtype=np.int64)
    frame = pd.DataFrame(
        {
            "study": np.asarray(study_ids),
            "severe": (labels == 2).astype(np.int64),
            "weight": np.asarray(SAMPLE_WEIGHTS)[labels],
            "p": np.asarray(severe_probabilities, dtype=np.float64),
        }
    )
    per_study = frame.groupby("study", sort=True).max()
    q = np.clip(per_study["p"].to_numpy(), EPS, 1 - EPS)
    return _log_loss(
        per_study["severe"].to_numpy(), np.column_stack([1 - q, q]), per_study["weight"].to_numpy()
    )


def _check_submission(submission: pd.DataFrame) -> None:
    """Kaggle's quality checks plus unique row ids; raises ``ValueError`` naming the problem."""
    if submission["row_id"].duplicated().any():
        duplicate = submission.loc[submission["row_id"].duplicated(), "row_id"].iloc[0]
        msg = f"submission has duplicate row_id {duplicate!r}; write each row once"
        raise ValueError(msg)
    absent = [c for c in PROBABILITY_COLUMNS if c not in submission.columns]
    if absent:
        msg = f"submission lacks column(s) {', '.join(absent)}"
        raise ValueError(msg)
    for column in PROBABILITY_COLUMNS:
        if not pd.api.types.is_numeric_dtype(submission[column]):
            msg = f"submission column {column!r} is not numeric"
            raise ValueError(msg)
    values = submission[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        msg = "submission has non-finite probabilities (NaN or inf); every row must be predicted"
        raise ValueError(msg)
    if (values < 0).any():
        msg = "submission has negative probabilities"
        raise ValueError(msg)


def _missing_message(missing: pd.Series, studies: pd.Series, subset: bool) -> str:
    named = ", ".join(missing.iloc[:MISSING_NAMED])
    if len(missing) > MISSING_NAMED:
        named += ", ..."
    n_studies = studies.nunique()
    hint = (
        "write all 25 rows of every study it holds"
        if subset
        else "write 25 rows for every study, or pass --subset to score only the studies it holds"
    )
    return (
        f"submission lacks {len(missing)} labelled row{'s' * (len(missing) != 1)} of "
        f"{n_studies} stud{'ies' if n_studies != 1 else 'y'} (first: {named}): {hint}"
    )


def score_frames(
    solution: pd.DataFrame, submission: pd.DataFrame, *, subset: bool = False
) -> MetricResult:
    """Score a submission against labels.

    Args:
        solution: columns ``row_id`` and ``severity`` (class index 0/1/2), one row per labelled row.
        submission: columns ``row_id`` + :data:`PROBABILITY_COLUMNS`; rows without a label are
            not scored (counted in ``rows_unscored``).
        subset: score only the studies with at least one row in ``submission`` (an out-of-fold
            file); otherwise every study of ``solution`` is scored.

    Raises:
        IncompleteSubmissionError: a labelled row of a scored study is not in the submission.
        ValueError: duplicated row ids, non-numeric, non-finite or negative predictions, or no
            labelled row to score.
    """
    _check_submission(submission)
    solution = solution[["row_id", "severity"]].reset_index(drop=True)
    studies = pd.Series([parse_row_id(r)[0] for r in solution["row_id"]], dtype=np.int64)
    if subset:
        held = {parse_row_id(r)[0] for r in submission["row_id"]}
        in_scope = studies.isin(held).to_numpy()
        solution, scope_studies = solution[in_scope], studies[in_scope]
    else:
        scope_studies = studies
    absent = ~solution["row_id"].isin(submission["row_id"]).to_numpy()
    if absent.any():
        raise IncompleteSubmissionError(
            _missing_message(solution["row_id"][absent], scope_studies[absent], subset)
        )
    if solution.empty:
        msg = "no submission row has a label: is the submission for a split that train.csv labels?"
        raise ValueError(msg)
    merged = solution.merge(submission, on="row_id", how="inner")
    unscored = len(submission) - len(merged)
    if unscored:
        LOGGER.info("%d submission rows have no label and are not scored", unscored)
    merged = merged.sort_values("row_id", kind="stable").reset_index(drop=True)
    parsed = [parse_row_id(r) for r in merged["row_id"]]
    families = np.array([c.family.value for _, c, _ in parsed])
    row_studies = np.array([s for s, _, _ in parsed])
    labels = merged["severity"].to_numpy(dtype=np.int64)
    probs = merged[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64)
    terms = {}
    for family in GROUPS:
        mask = families == family.value
        terms[family.value] = weighted_log_loss(labels[mask], probs[mask])
    spinal = families == Family.SPINAL.value
    terms["any_severe_spinal"] = any_severe_log_loss(
        row_studies[spinal], labels[spinal], probs[spinal, PROBABILITY_COLUMNS.index("severe")]
    )
    present = [v for v in terms.values() if np.isfinite(v)]
    if len(present) < len(terms):
        LOGGER.warning("some metric terms have no scored rows: %s", terms)
    return MetricResult(
        score=float(np.mean(present)),
        rows_scored=len(merged),
        studies_scored=len(np.unique(row_studies)),
        rows_unscored=unscored,
        studies_labelled=int(studies.nunique()),
        subset=subset,
        **terms,
    )


def score_submission(
    train: pd.DataFrame, submission: pd.DataFrame, *, subset: bool = False
) -> MetricResult:
    """Score a submission frame against a ``train.csv`` frame (read by
    :func:`rsna_lumbar.tables.read_train`); ``subset`` as in :func:`score_frames`."""
    return score_frames(labels_long(train), submission, subset=subset)


def bootstrap_scores(train: pd.DataFrame, submissions: dict[str, pd.DataFrame], *,
                     resamples: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """The score of each submission on the same bootstrap resamples of the studies of ``train``.

    Each resample draws as many studies as ``train`` holds, with replacement; a study drawn
    twice enters twice (renamed), so every resample is scored exactly as :func:`score_submission`
    scores a split. The draws are shared by the submissions, so differences between two of them
    are paired (the interval of a difference is the percentiles of ``a − b``).

    Returns:
        ``{name: float64 (resamples,)}`` scores.
    """
    studies = train["study_id"].astype(int).to_numpy()
    rows_of = {name: {int(s): rows for s, rows in frame.groupby(
                   frame["row_id"].str.split("_", n=1).str[0].astype(int))}
               for name, frame in submissions.items()}  # fmt: skip
    rng = np.random.default_rng(seed)
    scores = {name: np.empty(resamples) for name in submissions}
    for r in range(resamples):
        drawn = rng.choice(len(studies), size=len(studies), replace=True)
        renamed = [(k, int(studies[i])) for k, i in enumerate(drawn)]
        labels = train.iloc[drawn].assign(study_id=[k + 1 for k, _ in renamed])
        for name, by_study in rows_of.items():
            parts = [by_study[s].assign(row_id=by_study[s]["row_id"].str.replace(
                         f"{s}_", f"{k + 1}_", n=1, regex=False)) for k, s in renamed]  # fmt: skip
            scores[name][r] = score_submission(labels, pd.concat(parts, ignore_index=True)).score
    return scores
