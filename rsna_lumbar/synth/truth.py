"""Ground truth in TotalSpineSeg's output format: label maps of each sagittal series as NIfTI.

For every sagittal series the generator writes what ``totalspineseg INPUT OUTPUT`` would write
for an input named ``{study_id}_{series_id}.nii.gz`` (``docs/totalspineseg.md``, "Label maps"):

* ``truth/totalspineseg/step2_output/{study_id}_{series_id}.nii.gz``: cord 1, canal 2,
  vertebrae T10 30, T11 31, T12 32, L1–L5 41–45, sacrum 50, discs T10-T11 81, T11-T12 82,
  T12-L1 91, L1-L2 92 … L4-L5 95, L5-S 100;
* ``truth/totalspineseg/step1_output/{same name}``: the same, with every vertebra and the sacrum
  merged into label 50 (discs, canal and cord unchanged).

Grid: the series' first stack, slices sorted by their position along the slice normal
(ascending); NIfTI array ``data[i, j, k]`` = column ``i``, row ``j``, slice ``k``; uint8; affine =
``lps_to_ras_affine(stack_affine(...))`` as both qform and sform (code 1), exactly the grid a
DICOM→NIfTI conversion of that stack has (TSS resamples its outputs back to the input grid).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np

from rsna_lumbar.atomic import atomic_path
from rsna_lumbar.geometry.affine import lps_to_ras_affine, plane_normal, stack_affine
from rsna_lumbar.synth.anatomy import BODY_TSS
from rsna_lumbar.synth.series import Stack

STEP1_VERTEBRA = 50


def sorted_stack_affine(stack: Stack) -> tuple[np.ndarray, np.ndarray]:
    """(order, LPS affine) of ``stack`` with slices sorted along the normal (ascending)."""
    order = np.argsort(stack.positions @ plane_normal(stack.orientation), kind="stable")
    return order, stack_affine(stack.orientation, stack.positions[order], stack.pixel_spacing)


def to_step1(step2: np.ndarray) -> np.ndarray:
    """Merge all vertebrae and the sacrum into TSS step-1 label 50."""
    lut = np.arange(256, dtype=np.uint8)
    lut[list(BODY_TSS)] = STEP1_VERTEBRA
    flat = np.ascontiguousarray(step2, dtype=np.uint8).reshape(-1, step2.shape[-1])
    return cv2.LUT(flat, lut).reshape(step2.shape)


def _write_nifti(path: Path, data: np.ndarray, affine_ras: np.ndarray) -> None:
    img = nib.Nifti1Image(data.astype(np.uint8), affine_ras)
    img.set_qform(affine_ras, code=1)
    img.set_sform(affine_ras, code=1)
    img.header["xyzt_units"] = 10  # mm, seconds
    raw = img.to_bytes()
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))


def write_label_maps(truth_dir: Path, name: str, stack: Stack, labels: np.ndarray) -> str:
    """Write step1/step2 maps of one stack's labels (S, R, C); returns the file name."""
    order, affine = sorted_stack_affine(stack)
    step2 = labels[order]
    ras = lps_to_ras_affine(affine)
    fname = f"{name}.nii.gz"
    for step, data in (("step2_output", step2), ("step1_output", to_step1(step2))):
        # (S, R, C) → (C, R, S) = (i, j, k)
        _write_nifti(truth_dir / "totalspineseg" / step / fname, np.transpose(data, (2, 1, 0)), ras)
    return fname
