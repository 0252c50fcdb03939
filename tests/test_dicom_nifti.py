"""NIfTI export: a nibabel round trip keeps every voxel's world position to 1e-4 mm."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np

from rsna_lumbar.dicom import load_series
from rsna_lumbar.dicom.nifti import nifti_lps_affine, write_nifti
from tests.dicom_factory import (
    SAGITTAL,
    SeriesSpec,
    parallel_positions,
    rotate_orientation,
    rotation,
    write_series,
)


def test_nifti_round_trip_world_positions(tmp_path):
    iop = rotate_orientation(SAGITTAL, rotation("z", 5.0) @ rotation("y", -7.0))
    positions = parallel_positions((31.7, -120.4, 95.2), iop, 6, -3.3)
    spacing = (0.6875, 0.59375)
    write_series(tmp_path / "dcm", SeriesSpec(iop, positions, rows=20, columns=14,
                                              pixel_spacing=spacing))
    (volume,) = load_series(tmp_path / "dcm")
    path = write_nifti(volume, tmp_path / "sag.nii.gz")
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    assert data.shape == (14, 20, 6)  # (col, row, slice)
    normal = np.cross(iop[:3], iop[3:])
    order = np.argsort(positions @ normal)  # slice k of the volume is written slice order[k]
    for i, j, k in [(0, 0, 0), (13, 19, 5), (7, 3, 2)]:
        ras = image.affine @ [i, j, k, 1]
        lps = np.array([-ras[0], -ras[1], ras[2]])
        expected = (positions[order[k]] + i * spacing[1] * np.asarray(iop[:3])
                    + j * spacing[0] * np.asarray(iop[3:]))
        np.testing.assert_allclose(lps, expected, atol=1e-4)
        assert data[i, j, k] == volume.pixels[k, j, i]
    np.testing.assert_allclose(image.get_qform(), image.get_sform(), atol=1e-4)
    np.testing.assert_allclose(nifti_lps_affine(image), volume.affine, atol=1e-4)
    assert image.header.get_xyzt_units()[0] == "mm"


def test_dicom_package_does_not_import_torch():
    code = ("import sys, rsna_lumbar.dicom, rsna_lumbar.registration; "
            "bad = [m for m in ('torch', 'nibabel') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
