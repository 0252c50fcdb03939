"""Slice planes: plane classification, positions along the normal, points against slices.

Same conventions as :mod:`rsna_lumbar.geometry.affine` (LPS mm; voxel index ``(col, row,
slice)``; pixel centres at integers). Imports only numpy and that module.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np

from rsna_lumbar.geometry.affine import plane_normal, slice_affine, world_to_voxel


class Plane(str, enum.Enum):
    """Anatomical plane of a slice, from the dominant axis of its normal."""

    SAGITTAL = "sagittal"  # normal mostly along x (left-right)
    CORONAL = "coronal"  # normal mostly along y (anterior-posterior)
    AXIAL = "axial"  # normal mostly along z (head-foot)


def classify_plane(orientation: Sequence[float]) -> Plane:
    """Plane of an ``ImageOrientationPatient``: the LPS axis the slice normal is closest to."""
    axis = int(np.argmax(np.abs(plane_normal(orientation))))
    return (Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL)[axis]


def normal_offsets(orientation: Sequence[float], positions: np.ndarray) -> np.ndarray:
    """(S,) signed distance (mm) of each ``ImagePositionPatient`` (S, 3) along the slice normal.

    Sorting slices by this value orders them through the volume, whatever their file names or
    InstanceNumbers are.
    """
    return np.asarray(positions, dtype=np.float64).reshape(-1, 3) @ plane_normal(orientation)


def project_to_slices(
    orientation: Sequence[float],
    positions: np.ndarray,
    pixel_spacing: Sequence[float],
    points: np.ndarray,
) -> np.ndarray:
    """Project world points onto every slice of a set of parallel slices.

    Args:
        orientation: the slices' shared ``ImageOrientationPatient``.
        positions: (S, 3) ``ImagePositionPatient`` of each slice, LPS mm.
        pixel_spacing: ``[row spacing, column spacing]`` mm.
        points: (N, 3) LPS mm.

    Returns:
        float64 (N, S, 3): for each point and slice, ``(col, row, signed distance mm)``: the
        pixel the point projects to (centres at integers) and its distance from the slice
        plane, positive along ``row_cosine × column_cosine``. Each slice is treated through its
        own single-slice affine (unit normal step), so gaps and uneven spacing are exact.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    out = np.empty((len(points), len(positions), 3))
    for k, position in enumerate(positions):
        out[:, k, :] = world_to_voxel(slice_affine(orientation, position, pixel_spacing), points)
    return out


def inside_image(col: np.ndarray, row: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """True where ``(col, row)`` falls on the image: within half a pixel of the edge centres."""
    col, row = np.asarray(col), np.asarray(row)
    return (col >= -0.5) & (col <= columns - 0.5) & (row >= -0.5) & (row <= rows - 0.5)
