"""The Volume: pixels and patient geometry travelling together, with provenance and issues.

Frames (see :mod:`rsna_lumbar.geometry.affine`): ``pixels[slice, row, col]``; voxel indices
``(col, row, slice)``; ``affine`` maps voxel indices to DICOM patient coordinates (LPS, mm).
Competition coordinates ``(instance_number, x, y)`` are ``x`` = column, ``y`` = row of the
slice with that InstanceNumber. All conversions go through the affine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rsna_lumbar.dicom.errors import Issue
from rsna_lumbar.geometry.affine import lps_to_ras_affine, voxel_to_world, world_to_voxel
from rsna_lumbar.geometry.planes import Plane, classify_plane, inside_image


@dataclass(frozen=True)
class CompetitionPoints:
    """World points expressed as competition coordinates of one Volume (arrays of shape (N,)).

    ``instance_number`` is that of the nearest slice (clamped into the stack), ``x``/``y`` the
    fractional column/row of the projection, ``distance_mm`` the signed distance from that
    slice's plane, ``inside`` whether the point lies within half a slice of the stack and its
    projection on the image.
    """

    instance_number: np.ndarray
    x: np.ndarray
    y: np.ndarray
    distance_mm: np.ndarray
    inside: np.ndarray


@dataclass(frozen=True, eq=False)
class Volume:
    """One stack of a DICOM series as a regular 3-D grid in patient space.

    Attributes:
        pixels: float32 (S, R, C): slices sorted along the normal, RescaleSlope/Intercept
            applied, MONOCHROME1 already inverted (bright = high signal).
        affine: float64 (4, 4): voxel ``(col, row, slice)`` → LPS mm.
        study_id, series_id, description: provenance (description from the competition CSV).
        instance_numbers: int (S,) InstanceNumber of each slice.
        stack_index: which stack of the series (0 unless the series holds several).
        issues: what was recorded while building it.
    """

    pixels: np.ndarray
    affine: np.ndarray
    study_id: int = -1
    series_id: int = -1
    description: str = ""
    instance_numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    stack_index: int = 0
    issues: tuple[Issue, ...] = ()

    def __post_init__(self):
        if self.pixels.ndim != 3:
            msg = f"Volume pixels must be (slices, rows, cols); got shape {self.pixels.shape}"
            raise ValueError(msg)
        if np.shape(self.affine) != (4, 4):
            msg = f"Volume affine must be 4×4; got shape {np.shape(self.affine)}"
            raise ValueError(msg)
        numbers = np.asarray(self.instance_numbers, dtype=int)
        if len(numbers) == 0:
            numbers = np.arange(1, self.pixels.shape[0] + 1)
        if len(numbers) != self.pixels.shape[0]:
            msg = f"{len(numbers)} instance numbers for {self.pixels.shape[0]} slices"
            raise ValueError(msg)
        object.__setattr__(self, "instance_numbers", numbers)
        object.__setattr__(self, "affine", np.asarray(self.affine, dtype=np.float64))

    # -- shape and frame ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """(S, R, C)."""
        return tuple(self.pixels.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """(3,) mm between neighbouring voxels along col, row, slice."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def orientation(self) -> np.ndarray:
        """(6,) ImageOrientationPatient recovered from the affine."""
        return np.concatenate([self.affine[:3, 0], self.affine[:3, 1]]) / np.repeat(
            self.spacing[:2], 3
        )

    @property
    def plane(self) -> Plane:
        return classify_plane(self.orientation)

    @property
    def ras_affine(self) -> np.ndarray:
        """(4, 4) voxel ``(col, row, slice)`` → RAS mm (what NIfTI files store)."""
        return lps_to_ras_affine(self.affine)

    # -- instance numbers --------------------------------------------------------------------
    def slice_of(self, instance_number: int | Sequence[int]) -> int | np.ndarray:
        """Slice index of InstanceNumber(s); ``ValueError`` naming the series if absent."""
        wanted = np.atleast_1d(np.asarray(instance_number, dtype=int))
        lookup = {int(n): k for k, n in enumerate(self.instance_numbers)}
        missing = [int(n) for n in wanted if int(n) not in lookup]
        if missing:
            msg = (f"instance(s) {missing} not in series {self.series_id} stack "
                   f"{self.stack_index} (instances {sorted(lookup)}); the label may belong to "
                   f"another stack of the series")  # fmt: skip
            raise ValueError(msg)
        out = np.array([lookup[int(n)] for n in wanted])
        return int(out[0]) if np.ndim(instance_number) == 0 else out

    def instance_of(self, slice_index: int | Sequence[int]) -> int | np.ndarray:
        """InstanceNumber(s) of slice index(es)."""
        out = self.instance_numbers[np.asarray(slice_index, dtype=int)]
        return int(out) if np.ndim(out) == 0 else out

    # -- points ------------------------------------------------------------------------------
    def voxel_to_world(self, voxels: np.ndarray) -> np.ndarray:
        """``(col, row, slice)`` (..., 3) → LPS mm (..., 3)."""
        return voxel_to_world(self.affine, voxels)

    def world_to_voxel(self, points: np.ndarray) -> np.ndarray:
        """LPS mm (..., 3) → fractional ``(col, row, slice)`` (..., 3)."""
        return world_to_voxel(self.affine, points)

    def competition_to_voxel(self, instance_number, x, y) -> np.ndarray:
        """Competition ``(instance_number, x = column, y = row)`` → voxel (N, 3) (or (3,))."""
        k = self.slice_of(instance_number)
        voxel = np.stack(np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float),
                                             np.asarray(k, float)), axis=-1)  # fmt: skip
        return voxel

    def competition_to_world(self, instance_number, x, y) -> np.ndarray:
        """Competition ``(instance_number, x, y)`` → LPS mm, (N, 3) or (3,)."""
        return self.voxel_to_world(self.competition_to_voxel(instance_number, x, y))

    def world_to_competition(self, points: np.ndarray) -> CompetitionPoints:
        """LPS mm (N, 3) → nearest slice's InstanceNumber and fractional ``x``, ``y``."""
        voxel = self.world_to_voxel(np.asarray(points, float).reshape(-1, 3))
        n_slices = self.shape[0]
        k = np.clip(np.rint(voxel[:, 2]), 0, n_slices - 1).astype(int)
        distance = (voxel[:, 2] - k) * self.spacing[2]
        inside = (np.abs(voxel[:, 2] - k) <= 0.5) & inside_image(
            voxel[:, 0], voxel[:, 1], self.shape[1], self.shape[2]
        )
        return CompetitionPoints(self.instance_numbers[k], voxel[:, 0], voxel[:, 1], distance,
                                 inside)  # fmt: skip

    def __repr__(self) -> str:
        return (f"Volume(study={self.study_id}, series={self.series_id} "
                f"#{self.stack_index} {self.description!r}, shape={self.shape}, "
                f"spacing={np.round(self.spacing, 3).tolist()}, "
                f"issues={[i.code.value for i in self.issues]})")  # fmt: skip
