"""Series → stacks: parallel, same-shape, regularly spaced runs of slices, in position order.

A *stack* is what becomes one :class:`~rsna_lumbar.dicom.volume.Volume`. The instances of a
series (rows of the header index) are

1. grouped by ``ImageOrientationPatient`` (within ``orientation_tol`` per cosine), matrix shape
   and ``PixelSpacing``;
2. sorted by the projection of ``ImagePositionPatient`` on the slice normal
   (row cosine × column cosine), never by file name or InstanceNumber;
3. de-duplicated: slices at the same position (within 0.01 mm) keep the lowest InstanceNumber;
4. split where a step exceeds ``gap_factor`` × the median step, so every stack is a regular
   grid and its affine is exact for every slice.

Every anomaly is an :class:`~rsna_lumbar.dicom.errors.Issue` on the stack (``MULTIPLE_STACKS``,
``MIXED_SHAPES``, ``DUPLICATE_POSITIONS``, ``SLICE_GAP``, ``UNEVEN_SPACING``,
``INSTANCE_GAP``). Stacks of a series are numbered by their lowest InstanceNumber.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rsna_lumbar.dicom.errors import Issue, IssueCode
from rsna_lumbar.dicom.index import IOP_COLUMNS, IPP_COLUMNS
from rsna_lumbar.geometry.affine import plane_normal, slice_affine, stack_affine
from rsna_lumbar.geometry.planes import Plane, classify_plane, normal_offsets

DECODE_FIELDS: tuple[str, ...] = (
    "transfer_syntax", "photometric", "rescale_slope", "rescale_intercept", "rows", "columns",
    "bits_allocated", "bits_stored", "pixel_representation", "samples_per_pixel", "frames",
    "pixel_offset", "pixel_length",
)  # fmt: skip
"""Per-slice index columns a Stack carries so the reader can skip re-parsing headers."""
DUPLICATE_MM = 0.01
UNEVEN_MM = 0.1


@dataclass(frozen=True, eq=False)
class Stack:
    """Sorted slices of one series that share orientation, shape and spacing.

    Attributes:
        positions: (S, 3) ImagePositionPatient, LPS mm, sorted along :attr:`normal`.
        instance_numbers: (S,) InstanceNumber of each slice, same order.
        paths: (S,) file paths relative to the data folder, same order.
        orientation: ImageOrientationPatient (6,) shared by the slices (their mean).
        pixel_spacing: ``(row spacing, column spacing)`` mm.
        rows, columns: matrix size; a Volume of this stack has shape (S, rows, columns).
        headers: per slice, same order, the index's :data:`DECODE_FIELDS` (may be empty dicts
            when the index lacks them; the reader then parses the file's header).
    """

    study_id: int
    series_id: int
    description: str
    stack_index: int
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    positions: np.ndarray
    instance_numbers: np.ndarray
    paths: tuple[str, ...]
    slice_thickness: float = float("nan")
    spacing_between_slices: float = float("nan")
    issues: tuple[Issue, ...] = field(default=())
    headers: tuple[dict, ...] = field(default=())

    @property
    def n_slices(self) -> int:
        return len(self.positions)

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (3,), LPS; slice index increases along it."""
        return plane_normal(self.orientation)

    @property
    def plane(self) -> Plane:
        return classify_plane(self.orientation)

    @property
    def offsets(self) -> np.ndarray:
        """(S,) positions along the normal, mm, increasing."""
        return normal_offsets(self.orientation, self.positions)

    @property
    def slice_spacing(self) -> float:
        """Median step between slices (mm); for one slice SpacingBetweenSlices, then
        SliceThickness, else NaN."""
        if self.n_slices > 1:
            return float(np.median(np.diff(self.offsets)))
        for value in (self.spacing_between_slices, self.slice_thickness):
            if np.isfinite(value) and value > 0:
                return float(value)
        return float("nan")

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel ``(col, row, slice)`` → LPS mm (see geometry.affine)."""
        if self.n_slices > 1:
            return stack_affine(self.orientation, self.positions, self.pixel_spacing)
        step = self.slice_spacing if np.isfinite(self.slice_spacing) else 1.0
        return slice_affine(self.orientation, self.positions[0], self.pixel_spacing,
                            self.normal * step)  # fmt: skip

    def slice_of(self, instance_number: int) -> int:
        """Slice index of an InstanceNumber; ``ValueError`` if the stack lacks it."""
        hits = np.flatnonzero(self.instance_numbers == int(instance_number))
        if len(hits) == 0:
            msg = (f"instance {instance_number} is not in stack {self.stack_index} of series "
                   f"{self.series_id} (it holds {self.instance_numbers.min()}–"
                   f"{self.instance_numbers.max()}); pick the stack with stacks_containing()")
            raise ValueError(msg)  # fmt: skip
        return int(hits[0])

    def __contains__(self, instance_number: int) -> bool:
        return bool(np.any(self.instance_numbers == int(instance_number)))

    def __repr__(self) -> str:
        return (f"Stack(study={self.study_id}, series={self.series_id}, #{self.stack_index}, "
                f"{self.plane.value}, {self.n_slices}×{self.rows}×{self.columns}, "
                f"issues={[i.code.value for i in self.issues]})")  # fmt: skip


def _orientation_groups(iops: np.ndarray, tol: float) -> np.ndarray:
    """Group label per row: rows whose 6 cosines all agree within ``tol`` share a label."""
    labels = np.full(len(iops), -1)
    reps: list[np.ndarray] = []
    for i, iop in enumerate(iops):
        for g, rep in enumerate(reps):
            if np.max(np.abs(iop - rep)) <= tol:
                labels[i] = g
                break
        else:
            reps.append(iop)
            labels[i] = len(reps) - 1
    return labels


def _split_runs(group: pd.DataFrame, orientation: np.ndarray, gap_factor: float,
                where: tuple[int, int]) -> tuple[list[pd.DataFrame], list[Issue]]:  # fmt: skip
    """Sort one orientation/shape group, drop duplicates, split at gaps."""
    issues = []
    offsets = normal_offsets(orientation, group[list(IPP_COLUMNS)].to_numpy())
    group = group.assign(_offset=offsets).sort_values(["_offset", "instance_number"])
    keep = np.r_[True, np.diff(group["_offset"].to_numpy()) > DUPLICATE_MM]
    if not keep.all():
        dropped = group[~keep]
        issues.append(Issue(IssueCode.DUPLICATE_POSITIONS, f"{len(dropped)} slice(s) repeat a "
                            f"position; kept the lowest InstanceNumber, dropped instances "
                            f"{dropped.instance_number.tolist()}", *where,
                            dropped.path.iloc[0]))  # fmt: skip
        group = group[keep]
    steps = np.diff(group["_offset"].to_numpy())
    if len(steps) == 0:
        return [group], issues
    median = float(np.median(steps))
    breaks = np.flatnonzero(steps > gap_factor * median)
    if len(breaks):
        issues.append(Issue(IssueCode.SLICE_GAP, f"position steps of "
                            f"{np.round(steps[breaks], 2).tolist()} mm against a usual "
                            f"{median:.2f} mm; split into {len(breaks) + 1} stacks", *where))
    regular = np.delete(steps, breaks)
    if len(regular) and np.max(np.abs(regular - median)) > UNEVEN_MM:
        issues.append(Issue(IssueCode.UNEVEN_SPACING, f"steps range {regular.min():.3f}–"
                            f"{regular.max():.3f} mm; affine uses the mean step", *where))
    bounds = [0, *(breaks + 1).tolist(), len(group)]
    return [group.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])], issues


def build_stacks(
    series: pd.DataFrame,
    *,
    orientation_tol: float = 1e-3,
    gap_factor: float = 1.5,
) -> list[Stack]:
    """Stacks of one series from its index rows (columns of :data:`~.index.INDEX_COLUMNS`).

    Returns the stacks ordered by lowest InstanceNumber; series-level issues (several stacks,
    mixed shapes) are attached to every stack of the series. An empty frame gives ``[]``.
    """
    if series.empty:
        return []
    where = (int(series.study_id.iloc[0]), int(series.series_id.iloc[0]))
    iops = series[list(IOP_COLUMNS)].to_numpy(dtype=float)
    keys = np.column_stack([
        _orientation_groups(iops, orientation_tol), series["rows"], series["columns"],
        series.row_spacing.round(4), series.col_spacing.round(4),
    ])  # fmt: skip
    _, group_of_row = np.unique(keys, axis=0, return_inverse=True)
    runs: list[tuple[pd.DataFrame, np.ndarray, list[Issue]]] = []
    for group in np.unique(group_of_row):
        members = series.iloc[np.flatnonzero(group_of_row.ravel() == group)]
        orientation = members[list(IOP_COLUMNS)].to_numpy(dtype=float).mean(axis=0)
        pieces, issues = _split_runs(members, orientation, gap_factor, where)
        runs.extend((piece, orientation, issues) for piece in pieces)
    runs.sort(key=lambda run: int(run[0].instance_number.min()))
    shared = []
    if len(runs) > 1:
        shared.append(Issue(IssueCode.MULTIPLE_STACKS, f"{len(runs)} stacks of "
                            f"{[len(r[0]) for r in runs]} slices", *where))  # fmt: skip
    shapes = sorted(set(zip(series["rows"], series["columns"])))
    if len(shapes) > 1:
        shared.append(Issue(IssueCode.MIXED_SHAPES, f"matrix sizes {shapes}", *where))
    return [_make_stack(piece, orientation, k, [*issues, *shared], where)
            for k, (piece, orientation, issues) in enumerate(runs)]  # fmt: skip


def _make_stack(rows: pd.DataFrame, orientation: np.ndarray, k: int, issues: list[Issue],
                where: tuple[int, int]) -> Stack:  # fmt: skip
    numbers = rows.instance_number.to_numpy(dtype=int)
    ordered = np.sort(numbers)
    if len(ordered) > 1 and np.any(np.diff(ordered) != 1):
        issues = [*issues, Issue(IssueCode.INSTANCE_GAP, "InstanceNumbers not contiguous: "
                                 f"{ordered.tolist()}", *where)]  # fmt: skip
    first = rows.iloc[0]
    return Stack(
        study_id=where[0], series_id=where[1], description=str(first.series_description),
        stack_index=k, orientation=tuple(float(v) for v in orientation),
        pixel_spacing=(float(first.row_spacing), float(first.col_spacing)),
        rows=int(first["rows"]), columns=int(first["columns"]),
        positions=rows[list(IPP_COLUMNS)].to_numpy(dtype=float),
        instance_numbers=numbers, paths=tuple(rows.path.astype(str)),
        slice_thickness=_median_or_nan(rows.slice_thickness),
        spacing_between_slices=_median_or_nan(rows.spacing_between_slices),
        issues=tuple(issues),
        headers=tuple(rows[[c for c in DECODE_FIELDS if c in rows.columns]].to_dict("records")),
    )  # fmt: skip


def _median_or_nan(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.median()) if len(values) else float("nan")


def iter_series_stacks(
    index: pd.DataFrame, **kwargs
) -> Iterator[tuple[tuple[int, int], list[Stack]]]:
    """``((study_id, series_id), stacks)`` for every series of an index table."""
    for key, rows in index.groupby(["study_id", "series_id"], sort=True):
        yield (int(key[0]), int(key[1])), build_stacks(rows, **kwargs)


def stacks_containing(stacks: list[Stack], instance_number: int) -> list[Stack]:
    """The stacks that hold a given InstanceNumber (usually exactly one)."""
    return [s for s in stacks if instance_number in s]
