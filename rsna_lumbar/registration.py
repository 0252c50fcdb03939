"""Axial registration: world points (sagittal labels, localised levels) → axial slices.

Everything goes through patient coordinates (LPS mm), from headers only (no pixels):

1. a competition point ``(series, instance_number, x, y)`` becomes a world point through the
   affine of the stack that holds that instance (:func:`competition_to_world`);
2. the point is projected onto every slice of every axial stack of the study, each slice
   through its own plane (:func:`~rsna_lumbar.geometry.planes.project_to_slices`), giving the
   in-plane pixel ``(x = column, y = row)`` and the signed point-to-plane distance;
3. the chosen slice (:func:`choose`) is the one with the smallest ``|distance|`` among slices
   whose projection falls on the image, over all axial stacks; the point is ``covered`` when
   some such slice lies within ``slice_spacing / 2 + 0.5`` mm of it (its stack's spacing).

``register`` is the stage behind ``rsna-lumbar register`` (columns :data:`REGISTER_COLUMNS`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rsna_lumbar.atomic import write_csv
from rsna_lumbar.dicom.errors import Issue, IssueCode, ReadPolicy, report
from rsna_lumbar.dicom.index import read_index, write_index
from rsna_lumbar.dicom.stacks import Stack, iter_series_stacks, stacks_containing
from rsna_lumbar.geometry.affine import voxel_to_world
from rsna_lumbar.geometry.planes import Plane, inside_image, project_to_slices
from rsna_lumbar.tables import COORDINATE_COLUMNS
from rsna_lumbar.vocabulary import Condition, Level, SeriesDescription

_LOG = logging.getLogger(__name__)

REGISTER_COLUMNS: tuple[str, ...] = (
    "study_id", "level", "axial_series_id", "instance_number", "x", "y", "distance_mm", "covered",
)  # fmt: skip
COVERAGE_MARGIN_MM = 0.5


@dataclass(frozen=True)
class SlicePlacement:
    """Where a world point falls in one stack: its best slice and in-plane pixel.

    ``distance_mm`` is signed (positive along the stack normal); ``inside`` says the projection
    lies on the image; ``covered`` that the point is within half a slice spacing (+0.5 mm).
    """

    series_id: int
    stack_index: int
    instance_number: int
    x: float
    y: float
    distance_mm: float
    inside: bool
    covered: bool
    slice_spacing: float


def competition_to_world(stacks: Sequence[Stack], instance_number: int, x: float, y: float):
    """World point (3,) LPS mm of ``(instance_number, x = column, y = row)`` in a series.

    ``stacks`` are the series' stacks; the one holding the instance supplies the affine.
    Raises ``ValueError`` when no stack holds the instance.
    """
    holders = stacks_containing(list(stacks), instance_number)
    if not holders:
        msg = f"instance {instance_number} is in no readable stack of the series"
        raise ValueError(msg)
    stack = holders[0]
    return voxel_to_world(stack.affine, [float(x), float(y), stack.slice_of(instance_number)])


def place_in_stack(points: np.ndarray, stack: Stack) -> list[SlicePlacement]:
    """Best slice of ``stack`` for each world point (N, 3): nearest plane among slices whose
    projection is on the image, else the nearest plane (``inside`` False)."""
    proj = project_to_slices(stack.orientation, stack.positions, stack.pixel_spacing, points)
    spacing = stack.slice_spacing
    half = (spacing / 2 if np.isfinite(spacing) else 0.0) + COVERAGE_MARGIN_MM
    out = []
    for p in proj:  # (S, 3) per point
        on_image = inside_image(p[:, 0], p[:, 1], stack.rows, stack.columns)
        candidates = np.flatnonzero(on_image) if on_image.any() else np.arange(len(p))
        k = int(candidates[np.argmin(np.abs(p[candidates, 2]))])
        out.append(SlicePlacement(
            series_id=stack.series_id, stack_index=stack.stack_index,
            instance_number=int(stack.instance_numbers[k]), x=float(p[k, 0]), y=float(p[k, 1]),
            distance_mm=float(p[k, 2]), inside=bool(on_image[k]),
            covered=bool(on_image[k] and abs(p[k, 2]) <= half), slice_spacing=spacing,
        ))  # fmt: skip
    return out


def choose(placements: Sequence[SlicePlacement]) -> SlicePlacement | None:
    """The placement with the smallest ``|distance_mm|`` among those ``inside``; None if none."""
    inside = [p for p in placements if p.inside]
    return min(inside, key=lambda p: abs(p.distance_mm)) if inside else None


def is_axial_stack(stack: Stack) -> bool:
    """Axial by geometry, in a series described ``Axial T2`` (or not described at all)."""
    described = stack.description in ("", SeriesDescription.AXIAL_T2.value)
    return described and stack.plane is Plane.AXIAL


def stack_showing(point: np.ndarray,
                  stacks: Sequence[Stack]) -> tuple[Stack, SlicePlacement] | None:  # fmt: skip
    """The stack (and its placement) whose nearest slice to the world point (3,) LPS mm is
    closest among those whose projection lies on the image (:func:`choose`); None if none."""
    point = np.asarray(point, float)[None]
    placements = [(stack, place_in_stack(point, stack)[0]) for stack in stacks]
    best = choose([p for _, p in placements])
    return None if best is None else next((s, p) for s, p in placements if p is best)


def axial_stacks_by_study(
    stacks: Mapping[tuple[int, int], Sequence[Stack]],
) -> dict[int, list[Stack]]:
    """``{study_id: [axial Stack, ...]}`` from ``{(study_id, series_id): [Stack, ...]}``."""
    axial: dict[int, list[Stack]] = {}
    for (study, _), series_stacks in stacks.items():
        axial.setdefault(study, []).extend(s for s in series_stacks if is_axial_stack(s))
    return axial


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
    by_study: dict[int, list[Stack]] = {}
    for (study, _), series_stacks in stacks.items():
        by_study.setdefault(study, []).extend(s for s in series_stacks if is_axial_stack(s))
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


def read_points(path: str | os.PathLike, condition: Condition) -> pd.DataFrame:
    """Rows of a label-coordinates CSV (real or ``localize`` output) for one condition."""
    frame = pd.read_csv(path)
    missing = set(COORDINATE_COLUMNS) - set(frame.columns)
    if missing:
        msg = f"{path} lacks columns {sorted(missing)}; expected train_label_coordinates.csv's"
        raise ValueError(msg)
    return frame[frame.condition == condition.title].reset_index(drop=True)


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
    table, issues = register_points(index, read_points(points_path, condition))
    write_csv(table, out)
    covered = int(table.covered.sum())
    _LOG.info("registered %d (study, level) points of %d studies: %d covered; %d issues → %s",
              len(table), table.study_id.nunique(), covered, len(issues), out)  # fmt: skip
    return table
