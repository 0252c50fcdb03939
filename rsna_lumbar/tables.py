"""Validated readers for the competition's CSV files.

Every reader checks the schema and the values against :mod:`rsna_lumbar.vocabulary` and raises
:class:`TableError` naming the file, the line (1-based, header = line 1) and the offending value,
so a typo in a hand-edited file is found in seconds rather than as a wrong score.

Returned frames (all ``study_id``/``series_id`` as int64):

* :func:`read_train` — ``study_id`` + the 25 target columns in :data:`TARGET_COLUMNS` order,
  values the severity strings or missing (``None``/NaN).
* :func:`read_label_coordinates` — ``study_id, series_id, instance_number, condition, level, x, y``
  with the Title-Case spellings kept as in the file.
* :func:`read_series_descriptions` — ``study_id, series_id, series_description``.
* :func:`read_sample_submission` — ``row_id, normal_mild, moderate, severe``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from rsna_lumbar.layout import CompetitionFolder
from rsna_lumbar.vocabulary import (
    SUBMISSION_COLUMNS,
    TARGET_COLUMNS,
    Condition,
    Level,
    SeriesDescription,
    Severity,
    parse_row_id,
)

COORDINATE_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
SERIES_COLUMNS = ("study_id", "series_id", "series_description")
TRAIN_COLUMNS = ("study_id", *TARGET_COLUMNS)


class TableError(ValueError):
    """A competition CSV violates its schema; the message names file, line and value."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def _read_csv(path: str | os.PathLike, expected: Iterable[str], what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise TableError(path, None, f"{what} not found; pass the competition folder's file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise TableError(path, None, f"cannot parse as CSV: {error}") from None
    expected = list(expected)
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    if missing or extra:
        detail = []
        if missing:
            detail.append(f"missing column(s) {missing}")
        if extra:
            detail.append(f"unexpected column(s) {extra}")
        raise TableError(path, 1, f"{'; '.join(detail)}; a {what} has columns {expected}")
    return frame[expected]


def _line(position: int) -> int:
    """File line of the data row at ``position`` (0-based) given a one-line header."""
    return position + 2


def _parse_column(
    path: Path, frame: pd.DataFrame, column: str, parse: Callable[[str], object], what: str
) -> list:
    values = []
    for position, text in enumerate(frame[column].tolist()):
        if text is None or (isinstance(text, float) and np.isnan(text)):
            raise TableError(path, _line(position), f"empty {column}; every row needs {what}")
        try:
            values.append(parse(text))
        except (ValueError, TypeError) as error:
            raise TableError(path, _line(position), f"{column}={text!r}: {error}") from None
    return values


def _integer(text: str) -> int:
    value = float(text)
    if not value.is_integer() or value < 0:
        msg = "expected a non-negative integer"
        raise ValueError(msg)
    return int(value)


def _number(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        msg = "expected a finite number"
        raise ValueError(msg)
    return value


def _check_unique(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    duplicated = frame.duplicated(columns, keep="first").to_numpy()
    if duplicated.any():
        position = int(np.flatnonzero(duplicated)[0])
        key = ", ".join(f"{c}={frame[c].iloc[position]}" for c in columns)
        raise TableError(path, _line(position), f"duplicate row for {key}")


def read_train(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``train.csv``: one row per study, 25 severity columns (missing labels kept as NaN)."""
    path = Path(path)
    frame = _read_csv(path, TRAIN_COLUMNS, "train.csv")
    frame["study_id"] = _parse_column(path, frame, "study_id", _integer, "a study_id")
    for column in TARGET_COLUMNS:
        for position, text in enumerate(frame[column].tolist()):
            if isinstance(text, str) and text not in {s.value for s in Severity}:
                raise TableError(
                    path,
                    _line(position),
                    f"{column}={text!r} is not a severity; expected one of "
                    f"{[s.value for s in Severity]} or empty",
                )
    _check_unique(path, frame, ["study_id"])
    frame["study_id"] = frame["study_id"].astype("int64")
    return frame.reset_index(drop=True)


def read_label_coordinates(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``train_label_coordinates.csv`` (Title-Case conditions, ``L1/L2`` levels)."""
    path = Path(path)
    frame = _read_csv(path, COORDINATE_COLUMNS, "train_label_coordinates.csv")
    for column in ("study_id", "series_id", "instance_number"):
        frame[column] = _parse_column(path, frame, column, _integer, f"a {column}")
        frame[column] = frame[column].astype("int64")
    _parse_column(path, frame, "condition", Condition.from_title, "a condition")
    _parse_column(path, frame, "level", Level.from_title, "a level")
    for column in ("x", "y"):
        frame[column] = _parse_column(path, frame, column, _number, f"an {column} coordinate")
        frame[column] = frame[column].astype("float64")
    return frame.reset_index(drop=True)


def read_series_descriptions(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``{train,test}_series_descriptions.csv``."""
    path = Path(path)
    frame = _read_csv(path, SERIES_COLUMNS, "series descriptions file")
    for column in ("study_id", "series_id"):
        frame[column] = _parse_column(path, frame, column, _integer, f"a {column}")
        frame[column] = frame[column].astype("int64")
    _parse_column(path, frame, "series_description", SeriesDescription, "a series_description")
    _check_unique(path, frame, ["study_id", "series_id"])
    return frame.reset_index(drop=True)


def read_sample_submission(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``sample_submission.csv`` (or any submission): row ids checked, probabilities float."""
    path = Path(path)
    frame = _read_csv(path, SUBMISSION_COLUMNS, "submission")
    _parse_column(path, frame, "row_id", parse_row_id, "a row_id")
    for column in SUBMISSION_COLUMNS[1:]:
        frame[column] = _parse_column(path, frame, column, _number, "a probability")
        frame[column] = frame[column].astype("float64")
    _check_unique(path, frame, ["row_id"])
    return frame.reset_index(drop=True)


def labels_long(train: pd.DataFrame) -> pd.DataFrame:
    """``train.csv`` as one row per labelled (study, condition, level).

    Returns columns ``row_id, study_id, condition, level, severity`` where ``condition`` and
    ``level`` are the vocabulary enums' values and ``severity`` the class index 0/1/2. Rows with a
    missing label are dropped: Kaggle does not score them.
    """
    records = []
    by_value = {s.value: s.index for s in Severity}
    rows = train[list(TARGET_COLUMNS)].itertuples(index=False)
    for study_id, row in zip(train["study_id"].tolist(), rows):
        for column, value in zip(TARGET_COLUMNS, row):
            if isinstance(value, str):
                records.append((f"{int(study_id)}_{column}", int(study_id), column, by_value[value]))
    frame = pd.DataFrame(records, columns=["row_id", "study_id", "target", "severity"])
    parsed = [parse_row_id(r) for r in frame["row_id"]]
    frame["condition"] = [c.value for _, c, _ in parsed]
    frame["level"] = [lv.value for _, _, lv in parsed]
    return frame[["row_id", "study_id", "condition", "level", "severity"]]



def split_study_ids(data: str | os.PathLike, split: str) -> list[int]:
    """Study ids of a split of a competition folder, from its series-descriptions CSV.

    That file lists every study Kaggle scores, including studies whose images are missing or
    unreadable, so it (not the image folders) defines the rows of a submission.
    """
    frame = read_series_descriptions(CompetitionFolder(data).series_descriptions_csv(split))
    return sorted(int(s) for s in frame["study_id"].unique())
