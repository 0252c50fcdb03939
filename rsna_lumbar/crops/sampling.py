"""Oriented, fixed-millimetre 2.5D patches around a world point of a Volume.

A patch is ``(S, H, W)`` float32: ``S`` native slices of the volume, the middle one nearest the
point (clamped at the stack's ends, edge slices repeated); each resampled bilinearly on an
``H × W`` grid of fixed millimetre size centred on the point's projection onto that slice.

The grid is oriented by *world* directions, not by the image's own axes: the caller names the
LPS unit vectors ``u`` (increasing patch column), ``v`` (increasing patch row) and ``w``
(increasing patch slice). ``u`` and ``v`` are projected onto the slice plane and
orthonormalised; slices are ordered so that the patch's slice index runs along ``w``. So a
series stored right-to-left, flipped in-plane, or acquired at 0.5 mm or 0.9 mm pixels gives the
same patch of the same anatomy; and a right-sided structure is mirrored onto the left simply by
asking for ``u`` (or ``w``) pointing to the patient's right.

Intensities are normalised per volume (robust: median → 0, 1st–99th percentile range → 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import map_coordinates

from rsna_lumbar.dicom.volume import Volume
from rsna_lumbar.geometry.affine import voxel_to_world


@dataclasses.dataclass(frozen=True)
class PatchSpec:
    """What a model sees: ``size_mm`` square in-plane, ``size_px`` pixels a side, ``n_slices``
    slices; and the context cut around it so that a training shift shows real anatomy:
    ``context_px`` more pixels on each side (same pixel size) and ``context_slices`` more
    slices at each end. The cache holds the cut, ``(cut_slices, cut_px, cut_px)``;
    :func:`window` takes the view out of it."""

    size_mm: float
    size_px: int
    n_slices: int
    context_px: int = 0
    context_slices: int = 0

    def __post_init__(self):
        if self.size_mm <= 0 or self.size_px < 4 or self.n_slices < 1 or self.n_slices % 2 == 0:
            msg = f"bad patch spec {self}: need size_mm > 0, size_px ≥ 4 and an odd n_slices ≥ 1"
            raise ValueError(msg)
        if self.context_px < 0 or self.context_slices < 0:
            raise ValueError(f"bad patch spec {self}: context_px and context_slices must be ≥ 0")

    @property
    def pixel_mm(self) -> float:
        return self.size_mm / self.size_px

    @property
    def cut(self) -> PatchSpec:
        """The patch actually cut: the view and its context, at the view's pixel size."""
        px = self.size_px + 2 * self.context_px
        return PatchSpec(px * self.pixel_mm, px, self.n_slices + 2 * self.context_slices)


def window(patch: np.ndarray, spec: PatchSpec, shift_px: tuple[int, int] = (0, 0),
           shift_slices: int = 0) -> np.ndarray:
    """The ``(n_slices, size_px, size_px)`` view of a cut ``patch`` (``spec.cut``'s shape),
    moved ``shift_px`` = (columns, rows) pixels and ``shift_slices`` slices off its centre, each
    clipped to the context, so every pixel shown is anatomy that was cut, never a repeated edge
    or a reflection. A patch of the view's own shape (a cache cut without context) is returned
    unmoved.

    Raises:
        ValueError: ``patch`` has neither the cut's shape nor the view's.
    """
    cut = spec.cut
    if patch.shape == (spec.n_slices, spec.size_px, spec.size_px):
        return patch
    if patch.shape != (cut.n_slices, cut.size_px, cut.size_px):
        raise ValueError(f"a patch of shape {patch.shape} is not a cut of {spec}")
    c, r = (int(np.clip(s, -spec.context_px, spec.context_px)) for s in shift_px)
    k = int(np.clip(shift_slices, -spec.context_slices, spec.context_slices))
    k0, r0, c0 = spec.context_slices + k, spec.context_px + r, spec.context_px + c
    return patch[k0:k0 + spec.n_slices, r0:r0 + spec.size_px, c0:c0 + spec.size_px]


def intensity_scale(volume: Volume) -> tuple[float, float]:
    """(centre, scale) of a volume's robust normalisation: median and 1st–99th percentile range."""
    sample = volume.pixels[:, ::4, ::4]
    low, centre, high = np.percentile(sample, [1, 50, 99])
    return float(centre), float(max(high - low, 1e-6))


def _in_plane_axes(normal: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
    """Project ``u``, ``v`` onto the plane with unit ``normal`` and orthonormalise them."""
    u = u - (u @ normal) * normal
    if np.linalg.norm(u) < 1e-3:
        msg = f"patch axis u={u} is perpendicular to the slice plane; pick in-plane directions"
        raise ValueError(msg)
    u = u / np.linalg.norm(u)
    v = v - (v @ normal) * normal - (v @ u) * u
    if np.linalg.norm(v) < 1e-3:
        msg = "patch axes u and v are parallel once projected on the slice plane"
        raise ValueError(msg)
    return u, v / np.linalg.norm(v)


def extract_patch(
    volume: Volume,
    center: np.ndarray,
    spec: PatchSpec,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    normalisation: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict]:
    """Cut one oriented patch.

    Args:
        volume: the series stack to sample.
        center: (3,) LPS mm.
        spec: size and slice count.
        axes: LPS unit vectors ``(u, v, w)``: patch column, row and slice directions.
        normalisation: ``(centre, scale)`` from :func:`intensity_scale` (computed when ``None``).

    Returns:
        ``(patch, info)``: float32 ``(S, H, W)`` and a dict with the point's voxel index, its
        distance (mm) to the centre slice's plane, and whether it projects inside the image.
    """
    u, v, w = (np.asarray(a, dtype=np.float64) for a in axes)
    centre_value, scale = normalisation or intensity_scale(volume)
    center = np.asarray(center, dtype=np.float64)
    voxel = volume.world_to_voxel(center)
    step = volume.affine[:3, 2]
    normal = step / np.linalg.norm(step)
    n_slices = volume.shape[0]
    k0 = int(np.clip(np.rint(voxel[2]), 0, n_slices - 1))
    half = spec.n_slices // 2
    direction = 1 if step @ w >= 0 else -1
    slices = np.clip(k0 + direction * np.arange(-half, half + 1), 0, n_slices - 1)
    u, v = _in_plane_axes(normal, u, v)
    offsets = (np.arange(spec.size_px) - (spec.size_px - 1) / 2) * (spec.size_mm / spec.size_px)
    grid = offsets[:, None, None] * v + offsets[None, :, None] * u  # (H, W, 3) mm, row-major
    inverse = np.linalg.inv(volume.affine)
    patch = np.empty((spec.n_slices, spec.size_px, spec.size_px), dtype=np.float32)
    for out, k in enumerate(slices):
        plane_point = voxel_to_world(volume.affine, np.array([voxel[0], voxel[1], k]))
        # The point's projection on slice k: remove its offset along the normal.
        origin = center - ((center - plane_point) @ normal) * normal
        coords = (grid + origin) @ inverse[:3, :3].T + inverse[:3, 3]  # (H, W, 3) (col,row,k)
        image = (volume.pixels[k] - centre_value) / scale
        patch[out] = map_coordinates(
            image, [coords[..., 1], coords[..., 0]], order=1, mode="constant", cval=0.0
        )
    rows_n, cols_n = volume.shape[1:]
    info = {
        "voxel": [round(float(x), 3) for x in voxel],
        "distance_mm": round(float((voxel[2] - k0) * np.linalg.norm(step)), 3),
        "inside": bool(0 <= voxel[0] <= cols_n - 1 and 0 <= voxel[1] <= rows_n - 1),
    }
    return patch, info
