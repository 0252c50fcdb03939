"""Slice placement: where a world point (LPS mm) falls in a stack's slices, from headers only.

1. a competition point ``(series, instance_number, x, y)`` becomes a world point through the
   affine of the stack that holds that instance (:func:`competition_to_world`);
2. a world point is projected onto every slice of a stack, each slice through its own plane
   (:func:`~rsna_lumbar.geometry.planes.project_to_slices`), giving the in-plane pixel
   ``(x = column, y = row)`` and the signed point-to-plane distance (:func:`place_in_stack`);
3. the chosen slice (:func:`choose`, :func:`stack_showing`) is the one with the smallest
   ``|distance|`` among slices whose projection falls on the image; the point is ``covered``
   when such a slice lies within ``slice_spacing / 2 + 0.5`` mm of it (its stack's spacing).

The ``register`` stage (:mod:`rsna_lumbar.registration`), the localiser and the crops place
their points with these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rsna_lumbar.dicom.stacks import Stack, stacks_containing
from rsna_lumbar.geometry.affine import voxel_to_world
from rsna_lumbar.geometry.planes import Plane, inside_image, project_to_slices
from rsna_lumbar.vocabulary import SeriesDescription

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
