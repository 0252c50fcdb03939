"""The ``register`` stage: labelled points (sagittal labels, localised levels) → axial slices.

Everything goes through patient coordinates (LPS mm), from headers only (no pixels), with the
slice placement of :mod:`rsna_lumbar.dicom.placement`:

1. a competition point ``(series, instance_number, x, y)`` becomes a world point through the
   affine of the stack that holds that instance
   (:func:`~rsna_lumbar.dicom.placement.competition_to_world`);
2. the point is projected onto every slice of every axial stack of the study, each slice
   through its own plane, giving the in-plane pixel ``(x = column, y = row)`` and the signed
   point-to-plane distance (:func:`~rsna_lumbar.dicom.placement.place_in_stack`);
3. the chosen slice (:func:`~rsna_lumbar.dicom.placement.choose`) is the one with the smallest
   ``|distance|`` among slices whose projection falls on the image, over all axial stacks; the
   point is ``covered`` when some such slice lies within ``slice_spacing / 2 + 0.5`` mm of it
   (its stack's spacing).

``register`` is the stage behind ``rsna-lumbar register`` (columns :data:`REGISTER_COLUMNS`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from rsna_lumbar.atomic import write_csv
from rsna_lumbar.dicom.errors import Issue, IssueCode, ReadPolicy, report
from rsna_lumbar.dicom.index import read_index, write_index
from rsna_lumbar.dicom.placement import (
    SlicePlacement,
    axial_stacks_by_study,
    choose,
    competition_to_world,
    place_in_stack,
)
from rsna_lumbar.dicom.stacks import iter_series_stacks
from rsna_lumbar.points import read_points
from rsna_lumbar.vocabulary import Condition, Level

_LOG = logging.getLogger(__name__)

REGISTER_COLUMNS: tuple[str, ...] = (
    "study_id", "level", "axial_series_id", "instance_number", "x", "y", "distance_mm", "covered",
)  # fmt: skip


def register_points(index: pd.DataFrame, points: pd.DataFrame) -> tuple[pd.DataFrame, list[Issue]]:
    """Register labelled points into the axial stacks of their studies.

    Args:
        index: header index (:data:`~rsna_lumbar.dicom.index.INDEX_COLUMNS`).
        points: ``study_id, series_id, instance_number, level, x, y`` (competition spellings,
            e.g. ``train_label_coordinates.csv`` rows), at most one row per (study, level).

    Returns:
        (table with :data:`REGISTER_COLUMNS`, one row per (study, level); issues).
    """
    stacks = dict(iter_series_stacks(index))
    by_study = axial_stacks_by_study(stacks)
    issues, rows = [], []
    points = points.assign(_order=points.level.map(lambda t: Level.from_title(t).index))
    points = points.sort_values(["study_id", "_order"]).drop_duplicates(["study_id", "level"])
    for study, group in points.groupby("study_id", sort=True):
        study = int(study)
        axial = by_study.get(study, [])
        if not axial:
            issues.append(Issue(IssueCode.NO_AXIAL, "no axial stack in this study; its levels "
                                "are written as not covered", study))  # fmt: skip
        for point in group.itertuples():
            where = (study, int(point.series_id))
            try:
                world = competition_to_world(stacks.get(where, []), int(point.instance_number),
                                             point.x, point.y)  # fmt: skip
            except ValueError as exc:
                issues.append(Issue(IssueCode.MISSING_POINT, f"{point.level}: {exc}; skipped",
                                    *where))  # fmt: skip
                continue
            placements = [p for s in axial for p in place_in_stack(world[None], s)]
            covered = any(p.covered for p in placements)
            rows.append(_row(study, point.level, choose(placements), covered))
    for issue in issues:
        report(issue, ReadPolicy.WARN)
    table = pd.DataFrame(rows, columns=list(REGISTER_COLUMNS))
    for column in ("axial_series_id", "instance_number"):
        table[column] = table[column].astype("Int64")
    return table, issues


def _row(study: int, level: str, best: SlicePlacement | None, covered: bool) -> dict:
    if best is None:
        return {"study_id": study, "level": level, "axial_series_id": pd.NA,
                "instance_number": pd.NA, "x": np.nan, "y": np.nan, "distance_mm": np.nan,
                "covered": False}  # fmt: skip
    return {"study_id": study, "level": level, "axial_series_id": best.series_id,
            "instance_number": best.instance_number, "x": round(best.x, 3),
            "y": round(best.y, 3), "distance_mm": round(abs(best.distance_mm), 3),
            "covered": covered}  # fmt: skip


def register(
    data: str | os.PathLike,
    split: str,
    out: str | os.PathLike,
    *,
    work: str | os.PathLike = "work",
    points: str | os.PathLike | None = None,
    condition: Condition = Condition.SPINAL_CANAL_STENOSIS,
    workers: int | None = None,
) -> pd.DataFrame:
    """The ``register`` stage: index (reused from ``work/index``), register, write ``out``.

    ``points`` defaults to ``{data}/{split}_label_coordinates.csv``.
    """
    points_path = Path(points) if points else Path(data) / f"{split}_label_coordinates.csv"
    if not points_path.is_file():
        msg = (f"{points_path} not found: register needs labelled points; pass --points with "
               "a CSV in train_label_coordinates.csv's schema (e.g. localize's output)")
        raise FileNotFoundError(msg)
    index = read_index(write_index(data, split, work, workers=workers))
    points_table = read_points(points_path)
    points_table = points_table[points_table.condition == condition.title].reset_index(drop=True)
    table, issues = register_points(index, points_table)
    write_csv(table, out)
    covered = int(table.covered.sum())
    _LOG.info("registered %d (study, level) points of %d studies: %d covered; %d issues → %s",
              len(table), table.study_id.nunique(), covered, len(issues), out)  # fmt: skip
    return table
