"""Class priors per target: the baseline every model must beat, and the inference fallback.

The prior of a target (condition, level) is the frequency of each grade among the studies of
``train.csv`` where that target is labelled, with one pseudo-count per grade (Laplace smoothing)
so that no grade gets probability 0 — a zero would cost ``−log(eps) ≈ 36`` the first time that
grade occurs. Priors are stored as JSON (``priors.json`` in a model folder) so the inference path
can fall back on them without ``train.csv``.
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


def class_priors(train: pd.DataFrame, pseudo_count: float = PSEUDO_COUNT) -> np.ndarray:
    """Per-target grade frequencies, shape (25, 3), rows in ``TARGET_COLUMNS`` order, summing to 1."""
    priors = np.empty((len(TARGET_COLUMNS), len(SEVERITIES)))
    for t, column in enumerate(TARGET_COLUMNS):
        values = train[column]
        counts = np.array([(values == s.value).sum() for s in SEVERITIES], dtype=np.float64)
        priors[t] = (counts + pseudo_count) / (counts.sum() + pseudo_count * len(SEVERITIES))
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
