"""The submission contract: build, validate, write atomically.

A valid submission has header ``row_id,normal_mild,moderate,severe``, exactly the 25 rows of
every study of the split (row ids from :func:`rsna_lumbar.vocabulary.study_row_ids`), finite
non-negative probabilities and rows that sum to 1. :func:`write_submission` validates before it
writes, so a broken file never reaches disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from rsna_lumbar.atomic import write_csv
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, SUBMISSION_COLUMNS, TARGETS, study_row_ids

ROW_SUM_TOLERANCE = 1e-6


class SubmissionError(ValueError):
    """A submission breaks the contract; the message says which rows and how."""


def build_submission(probabilities: Mapping[int, np.ndarray]) -> pd.DataFrame:
    """Assemble a submission frame from per-study probabilities.

    Args:
        probabilities: study id → (25, 3) array in :data:`~rsna_lumbar.vocabulary.TARGETS` order
            (condition-major, level-minor), columns Normal/Mild, Moderate, Severe. Rows are
            divided by their sums, so unnormalised scores are accepted.

    Returns:
        The frame with 25 rows per study, studies in ascending id order.
    """
    row_ids, blocks = [], []
    for study_id in sorted(probabilities):
        block = np.asarray(probabilities[study_id], dtype=np.float64)
        if block.shape != (len(TARGETS), 3):
            msg = f"study {study_id}: expected probabilities of shape (25, 3), got {block.shape}"
            raise SubmissionError(msg)
        sums = block.sum(axis=1, keepdims=True)
        if not np.isfinite(block).all() or (block < 0).any() or (sums <= 0).any():
            msg = f"study {study_id}: probabilities must be finite, non-negative, not all zero"
            raise SubmissionError(msg)
        row_ids.extend(study_row_ids(study_id))
        blocks.append(block / sums)
    values = np.concatenate(blocks) if blocks else np.zeros((0, 3))
    frame = pd.DataFrame(values, columns=list(PROBABILITY_COLUMNS))
    frame.insert(0, "row_id", row_ids)
    return frame


def validate_submission(frame: pd.DataFrame, study_ids: Iterable[int]) -> None:
    """Raise :class:`SubmissionError` unless ``frame`` is a complete, valid submission.

    Args:
        frame: the submission.
        study_ids: every study of the split (e.g. from ``{split}_series_descriptions.csv``).
    """
    if list(frame.columns) != list(SUBMISSION_COLUMNS):
        msg = f"submission columns are {list(frame.columns)}; expected {list(SUBMISSION_COLUMNS)}"
        raise SubmissionError(msg)
    expected = [r for s in sorted({int(s) for s in study_ids}) for r in study_row_ids(s)]
    got = frame["row_id"].astype(str)
    if got.duplicated().any():
        msg = f"duplicate row_id {got[got.duplicated()].iloc[0]!r}"
        raise SubmissionError(msg)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        msg = (
            f"submission rows do not match the split: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}); "
            f"expected 25 rows for each of {len(expected) // 25} studies"
        )
        raise SubmissionError(msg)
    values = frame[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1)
    bad |= np.abs(values.sum(axis=1) - 1) > ROW_SUM_TOLERANCE
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        msg = (
            f"{int(bad.sum())} rows are not probability vectors (finite, ≥ 0, summing to 1); "
            f"first: {frame.iloc[position].to_dict()}"
        )
        raise SubmissionError(msg)


def write_submission(frame: pd.DataFrame, path: str | os.PathLike, study_ids: Iterable[int]) -> None:
    """Validate ``frame`` against the split's studies, then write it atomically to ``path``."""
    validate_submission(frame, study_ids)
    write_csv(frame, path, float_format="%.8g")
