"""Affines between voxel indices and DICOM patient coordinates.

Conventions (the only definition in the kit; everything else imports from here):

* **World frame**: DICOM patient coordinates, LPS, millimetres. +x points to the patient's
  left, +y to the posterior, +z to the head (superior).
* **Pixel arrays** of a :class:`~rsna_lumbar.dicom.volume.Volume` are stored
  ``pixels[slice, row, col]`` (shape ``(S, R, C)``).
* **Voxel index** vectors are ordered ``(col, row, slice)``, i.e. ``(i, j, k)`` with ``i`` the
  column, matching DICOM's definition: the first ``ImageOrientationPatient`` triplet is the
  direction of increasing column index, the second that of increasing row index.
  Pixel centres sit at integer indices.
* **Affine**: a float64 4×4 matrix ``A`` with ``world = A @ [col, row, slice, 1]``:
  ``A[:3, 0] = row_cosine * column_spacing``, ``A[:3, 1] = column_cosine * row_spacing``,
  ``A[:3, 2] = slice step`` (from ``ImagePositionPatient`` differences),
  ``A[:3, 3] = ImagePositionPatient`` of slice 0. ``PixelSpacing`` is ``[row spacing,
  column spacing]`` (the distance between rows, then between columns).
* **Competition coordinates** ``(instance_number, x, y)``: ``x`` is the column, ``y`` the row
  of the image with that InstanceNumber, so ``(x, y, slice_of(instance_number))`` is a voxel index.
* **NIfTI / RAS**: nibabel affines map to RAS; the RAS affine is ``diag(-1, -1, 1, 1) @ A``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def plane_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal ``row_cosine × column_cosine`` of an ``ImageOrientationPatient`` (shape (3,)).

    For a set of parallel slices, positions projected on this normal increase along the stack
    in one consistent direction, whatever the file names or InstanceNumbers say.
    """
    iop = np.asarray(orientation, dtype=np.float64)
    if iop.shape != (6,):
        msg = f"ImageOrientationPatient must have 6 values, got {iop.shape}"
        raise ValueError(msg)
    normal = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        msg = f"ImageOrientationPatient {iop.tolist()} has parallel row and column directions"
        raise ValueError(msg)
    return normal / norm


def slice_affine(
    orientation: Sequence[float],
    position: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float] | None = None,
) -> np.ndarray:
    """4×4 affine of one slice (or of a stack when ``slice_step`` is given).

    Args:
        orientation: ``ImageOrientationPatient`` (row cosine, then column cosine).
        position: ``ImagePositionPatient`` of the slice, LPS mm: the centre of pixel (0, 0).
        pixel_spacing: ``PixelSpacing`` = ``[row spacing, column spacing]`` in mm.
        slice_step: world vector (mm) from one slice to the next; defaults to the unit normal
            (1 mm), which makes the affine invertible for a single slice.

    Returns:
        float64 (4, 4) affine mapping ``(col, row, slice, 1)`` to LPS mm.
    """
    iop = np.asarray(orientation, dtype=np.float64)
    row_spacing, col_spacing = (float(v) for v in pixel_spacing)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * col_spacing
    affine[:3, 1] = iop[3:] * row_spacing
    affine[:3, 2] = plane_normal(iop) if slice_step is None else np.asarray(slice_step, float)
    affine[:3, 3] = np.asarray(position, dtype=np.float64)
    return affine


def stack_affine(
    orientation: Sequence[float],
    positions: np.ndarray,
    pixel_spacing: Sequence[float],
) -> np.ndarray:
    """4×4 affine of a sorted stack of parallel slices.

    Args:
        orientation: the shared ``ImageOrientationPatient``.
        positions: (S, 3) ``ImagePositionPatient`` of the slices, in stack order.
        pixel_spacing: ``[row spacing, column spacing]`` in mm.

    The slice step is the mean position difference (first to last over ``S - 1``), so gaps
    and uneven spacing are averaged; callers record those as issues. A single slice gets a
    1 mm step along the normal.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    step = None
    if len(positions) > 1:
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
    return slice_affine(orientation, positions[0], pixel_spacing, step)


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4×4 affine to points of shape (..., 3); returns float64 of the same shape."""
    points = np.asarray(points, dtype=np.float64)
    return points @ affine[:3, :3].T + affine[:3, 3]


def voxel_to_world(affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """Voxel indices ``(col, row, slice)`` (..., 3) → LPS mm (..., 3)."""
    return apply_affine(affine, voxels)


def world_to_voxel(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """LPS mm (..., 3) → fractional voxel indices ``(col, row, slice)`` (..., 3)."""
    return apply_affine(np.linalg.inv(affine), points)


def lps_to_ras_affine(affine: np.ndarray) -> np.ndarray:
    """The NIfTI (RAS) affine of a voxel grid whose LPS affine is ``affine``."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def ras_to_lps_affine(affine: np.ndarray) -> np.ndarray:
    """The LPS affine of a voxel grid whose NIfTI (RAS) affine is ``affine``.

    Inverse of :func:`lps_to_ras_affine` (the flip is its own inverse). Use it on every affine
    read from a NIfTI file (``nibabel``'s ``img.affine``) before mapping its voxel indices to
    DICOM world points; the voxel index order stays that of the NIfTI array.
    """
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each index axis, float64 (3,) mm: the norms of the affine's columns."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
