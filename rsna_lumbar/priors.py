"""Class priors per target: the baseline every model must beat, and the inference fallback.

The prior of a target (condition, level) comes from the counts ``n_k`` of each grade among the
studies of ``train.csv`` where that target is labelled, plus one pseudo-count per grade so that no
grade gets probability 0 (a zero costs ``−log(eps) ≈ 36`` the first time that grade occurs).

By default the counts are weighted by the metric's sample weights ``w_k`` = 1, 2, 4:
``p_k ∝ w_k·n_k``. That is the constant prediction that minimises the weighted log loss
``Σ_k w_k·n_k·(−log p_k)`` (Lagrange: ``p_k = w_k n_k / Σ_j w_j n_j``). Plain frequencies
(``weighted=False``) under-predict Moderate and Severe so badly that, on the real class balance,
they score *worse than uniform probabilities*; the weighted prior is the honest floor.

Priors are stored as JSON (``priors.json`` in a model folder) so the inference path can fall back
on them without ``train.csv``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from rsna_lumbar.atomic import write_text
from rsna_lumbar.submission import build_submission
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, SEVERITIES, TARGET_COLUMNS

PSEUDO_COUNT = 1.0


def class_priors(
    train: pd.DataFrame, weighted: bool = True, pseudo_count: float = PSEUDO_COUNT
) -> np.ndarray:
    """Per-target grade priors, shape (25, 3), rows in ``TARGET_COLUMNS`` order, summing to 1.

    Args:
        train: a ``train.csv`` frame (:func:`rsna_lumbar.tables.read_train`).
        weighted: multiply the smoothed counts by the metric's weights 1/2/4 (see module doc).
        pseudo_count: added to every grade's count.
    """
    weights = np.array([s.weight for s in SEVERITIES]) if weighted else np.ones(len(SEVERITIES))
    priors = np.empty((len(TARGET_COLUMNS), len(SEVERITIES)))
    for t, column in enumerate(TARGET_COLUMNS):
        values = train[column]
        counts = np.array([(values == s.value).sum() for s in SEVERITIES], dtype=np.float64)
        mass = (counts + pseudo_count) * weights
        priors[t] = mass / mass.sum()
    return priors


def uniform_priors() -> np.ndarray:
    """(25, 3) uniform probabilities: what to predict when nothing at all is known."""
    return np.full((len(TARGET_COLUMNS), len(SEVERITIES)), 1.0 / len(SEVERITIES))


def save_priors(priors: np.ndarray, path: str | os.PathLike) -> None:
    """Write priors as ``{target column: {normal_mild: p, moderate: p, severe: p}}`` JSON."""
    payload = {
        column: dict(zip(PROBABILITY_COLUMNS, map(float, row)))
        for column, row in zip(TARGET_COLUMNS, priors)
    }
    write_text(path, json.dumps(payload, indent=1) + "\n")


def load_priors(path: str | os.PathLike) -> np.ndarray:
    """Read priors written by :func:`save_priors`; raises ``ValueError`` naming a missing target."""
    payload = json.loads(open(path, encoding="utf-8").read())
    try:
        rows = [[payload[column][c] for c in PROBABILITY_COLUMNS] for column in TARGET_COLUMNS]
    except KeyError as error:
        msg = f"{path}: priors file lacks {error}; rebuild it with 'rsna-lumbar baseline'"
        raise ValueError(msg) from None
    priors = np.asarray(rows, dtype=np.float64)
    return priors / priors.sum(axis=1, keepdims=True)


def prior_submission(priors: np.ndarray, study_ids: Iterable[int]) -> pd.DataFrame:
    """A submission that predicts ``priors`` for every study."""
    return build_submission({int(s): priors for s in study_ids})
