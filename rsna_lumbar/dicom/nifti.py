"""NIfTI export of a Volume (for TotalSpineSeg and viewers), RAS affine, no resampling.

The NIfTI data array is indexed ``[col, row, slice]`` (nibabel's ``(i, j, k)``), i.e. the
Volume's ``pixels[slice, row, col]`` transposed, so the voxel index ``(col, row, slice)`` means
the same thing in both, and the stored affine is the Volume's LPS affine with x and y negated
(``geometry.affine.lps_to_ras_affine``). Both sform and qform are set (code 1, scanner).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from rsna_lumbar.atomic import atomic_path
from rsna_lumbar.dicom.volume import Volume
from rsna_lumbar.geometry.affine import lps_to_ras_affine


def to_nifti(volume: Volume) -> nib.Nifti1Image:
    """A float32 :class:`nibabel.Nifti1Image` of ``volume`` with its RAS affine."""
    data = np.ascontiguousarray(volume.pixels.transpose(2, 1, 0), dtype=np.float32)
    image = nib.Nifti1Image(data, volume.ras_affine)
    image.set_sform(volume.ras_affine, code=1)
    image.set_qform(volume.ras_affine, code=1)
    image.header.set_xyzt_units("mm")
    return image


def write_nifti(volume: Volume, path: str | os.PathLike) -> Path:
    """Write ``volume`` to ``path`` (``.nii`` or ``.nii.gz``) atomically; returns the path."""
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        msg = f"NIfTI path must end in .nii or .nii.gz, got {path.name!r}"
        raise ValueError(msg)
    payload = to_nifti(volume).to_bytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=1)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path


def nifti_lps_affine(image: nib.Nifti1Image) -> np.ndarray:
    """The LPS affine of a NIfTI image (inverse of the export's RAS flip), float64 (4, 4)."""
    return lps_to_ras_affine(image.affine)  # the x/y flip is its own inverse

