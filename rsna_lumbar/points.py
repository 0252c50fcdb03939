"""Points tables: labelled or localised points in ``train_label_coordinates.csv``'s schema.

One row per (study, condition, level) point with at least the columns :data:`POINT_COLUMNS`:
``study_id, series_id, instance_number, condition, level, x, y`` — the competition's Title-Case
spellings (``Spinal Canal Stenosis``, ``L4/L5``), ``x`` the column and ``y`` the row of the
point on that instance. The competition's label file is one; ``rsna-lumbar localize`` writes
another, with ``world_x, world_y, world_z`` (the point, LPS mm), ``source`` and ``confidence``
after those columns. The stages that take points (``register``, ``crops``) read either with
:func:`read_points`; ``localize`` writes with :func:`write_points`.
"""

from __future__ import annotations

import os

import pandas as pd

from rsna_lumbar.atomic import write_csv
from rsna_lumbar.tables import COORDINATE_COLUMNS as POINT_COLUMNS

LOCALISED_COLUMNS = (*POINT_COLUMNS, "world_x", "world_y", "world_z", "source", "confidence")
"""The columns of ``rsna-lumbar localize``'s output, in order."""


def read_points(path: str | os.PathLike) -> pd.DataFrame:
    """A points table as written (every column, spellings unchanged).

    Raises:
        ValueError: it lacks one of :data:`POINT_COLUMNS`; the message names them.
    """
    frame = pd.read_csv(path)
    missing = [c for c in POINT_COLUMNS if c not in frame.columns]
    if missing:
        msg = f"{path} lacks columns {missing}; expected train_label_coordinates.csv's schema"
        raise ValueError(msg)
    return frame


def write_points(rows: list[dict], path: str | os.PathLike) -> pd.DataFrame:
    """Write localised points (dicts with :data:`LOCALISED_COLUMNS`) atomically; returns the
    table (empty, with the columns, when there is no row)."""
    table = pd.DataFrame(rows, columns=list(LOCALISED_COLUMNS))
    write_csv(table, path)
    return table
