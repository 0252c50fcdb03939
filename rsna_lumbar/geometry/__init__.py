"""Patient geometry: the one place where index order, frames and affines are defined.

See :mod:`rsna_lumbar.geometry.affine` for the conventions every other module relies on.
"""

from rsna_lumbar.geometry.affine import (
    apply_affine,
    lps_to_ras_affine,
    plane_normal,
    ras_to_lps_affine,
    slice_affine,
    stack_affine,
    voxel_spacing,
    voxel_to_world,
    world_to_voxel,
)

__all__ = [
    "apply_affine",
    "lps_to_ras_affine",
    "plane_normal",
    "ras_to_lps_affine",
    "slice_affine",
    "stack_affine",
    "voxel_spacing",
    "voxel_to_world",
    "world_to_voxel",
]
