"""Study-level stratified k-fold splits, written once and shared by training and the report.

Every series and crop of a study lands in the same fold. Studies are stratified on a severity
summary — the worst spinal grade (0/1/2) and the number of Severe labels among the other 20
targets (0, 1–2, ≥ 3) — so that each fold sees the rare severe cases in proportion. Strata with
fewer studies than folds are pooled into one stratum. The split is a pure function of the labels,
``k`` and the seed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from rsna_lumbar.atomic import write_csv
from rsna_lumbar.vocabulary import TARGETS, Family, Severity, target_column

LOGGER = logging.getLogger(__name__)


def severity_stratum(train: pd.DataFrame) -> np.ndarray:
    """(N,) int stratum of each study of a ``train.csv`` frame (see module docstring)."""
    grade = {s.value: s.index for s in Severity}
    codes = train[[target_column(c, lv) for c, lv in TARGETS]].apply(
        lambda column: column.map(grade)
    )
    spinal = [target_column(c, lv) for c, lv in TARGETS if c.family is Family.SPINAL]
    others = [target_column(c, lv) for c, lv in TARGETS if c.family is not Family.SPINAL]
    worst_spinal = codes[spinal].max(axis=1).fillna(0).astype(int).to_numpy()
    severe_others = (codes[others] == Severity.SEVERE.index).sum(axis=1).to_numpy()
    bucket = np.digitize(severe_others, [1, 3])
    return worst_spinal * 3 + bucket


def make_folds(train: pd.DataFrame, k: int = 5, seed: int = 42) -> pd.DataFrame:
    """Assign each study to one of ``k`` folds.

    Returns:
        Frame ``study_id, fold`` (fold in 0…k−1), sorted by study id.
    """
    if k < 2:
        msg = f"k={k}: cross-validation needs at least 2 folds"
        raise ValueError(msg)
    if len(train) < k:
        msg = f"{len(train)} studies cannot fill {k} folds; lower --k"
        raise ValueError(msg)
    order = np.argsort(train["study_id"].to_numpy(), kind="stable")
    studies = train["study_id"].to_numpy()[order]
    strata = severity_stratum(train)[order]
    values, counts = np.unique(strata, return_counts=True)
    rare = values[counts < k]
    strata = np.where(np.isin(strata, rare), -1, strata)
    if (strata == -1).sum() and (strata == -1).sum() < k:
        # A pooled stratum still smaller than k joins the largest stratum.
        values, counts = np.unique(strata[strata != -1], return_counts=True)
        strata = np.where(strata == -1, values[np.argmax(counts)], strata)
    folds = np.empty(len(studies), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(studies, strata)):
        folds[held_out] = fold
    return pd.DataFrame({"study_id": studies, "fold": folds})


def write_folds(folds: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the folds CSV atomically (``study_id,fold``)."""
    write_csv(folds, path)


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    """Read a folds CSV; raises ``ValueError`` with the fix when it is malformed."""
    path = Path(path)
    frame = pd.read_csv(path)
    if list(frame.columns) != ["study_id", "fold"] or frame["study_id"].duplicated().any():
        msg = f"{path} is not a folds file (study_id,fold, one row per study); rebuild it"
        raise ValueError(msg)
    return frame.astype("int64")
