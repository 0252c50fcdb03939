"""Volumes built from written series: geometry, pixel placement, rescale, MONOCHROME1, codecs.

Every expected world point is computed by hand from the IPP/IOP/PixelSpacing the test wrote:
``IPP + x · column_spacing · row_cosine + y · row_spacing · column_cosine``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from rsna_lumbar.dicom import DicomReadError, ReadPolicy, Volume, load_series, read_volumes
from rsna_lumbar.dicom.errors import DecodeError
from rsna_lumbar.dicom.index import index_series
from rsna_lumbar.dicom.reader import decode_slice, read_stack
from rsna_lumbar.dicom.stacks import build_stacks
from tests.dicom_factory import (
    SAGITTAL,
    JPEG2000Lossless,
    RLELossless,
    SeriesSpec,
    default_pixels,
    parallel_positions,
    rotate_orientation,
    rotation,
    truncate,
    write_series,
)

ROTATION = rotation("z", 6.0) @ rotation("x", -4.0) @ rotation("y", 3.0)
IOP = rotate_orientation(SAGITTAL, ROTATION)


def hand_world(ipp, iop, spacing, x, y):
    iop = np.asarray(iop, float)
    return np.asarray(ipp, float) + x * spacing[1] * iop[:3] + y * spacing[0] * iop[3:]


def _index_frame(folder: Path) -> pd.DataFrame:
    rows, _ = index_series(folder, folder, 5, 6)
    frame = pd.DataFrame(rows)
    frame["series_description"] = "Sagittal T2/STIR"
    return frame


@pytest.mark.parametrize("direction", [1.0, -1.0], ids=["left-to-right", "right-to-left"])
def test_rotated_sagittal_geometry_and_pixels(tmp_path, direction):
    n, rows, cols, spacing = 7, 20, 13, (0.9, 0.7)  # non-square matrix and pixels
    positions = parallel_positions((12.0, -70.0, 35.0), IOP, n, 3.6 * direction)
    numbers = list(range(n, 0, -1))  # reversed instance numbers
    pixels = default_pixels(n, rows, cols)
    write_series(tmp_path, SeriesSpec(IOP, positions, rows=rows, columns=cols,
                                      pixel_spacing=spacing, instance_numbers=numbers,
                                      pixels=pixels))
    (volume,) = load_series(tmp_path, study_id=5, series_id=6)
    assert volume.shape == (n, rows, cols) and volume.pixels.dtype == np.float32
    assert volume.plane.value == "sagittal"
    np.testing.assert_allclose(volume.spacing, [0.7, 0.9, 3.6], atol=1e-9)
    for k, number in enumerate(numbers):  # slice written k-th has instance `number`
        np.testing.assert_array_equal(volume.pixels[volume.slice_of(number)], pixels[k])
        for x, y in [(0, 0), (cols - 1, rows - 1), (4.25, 11.5)]:
            expected = hand_world(positions[k], IOP, spacing, x, y)
            np.testing.assert_allclose(volume.competition_to_world(number, x, y), expected,
                                       atol=1e-6)
            back = volume.world_to_competition(expected[None])
            assert back.instance_number[0] == number and back.inside[0]
            np.testing.assert_allclose([back.x[0], back.y[0], back.distance_mm[0]], [x, y, 0],
                                       atol=1e-6)
    # a point 1 mm off the plane of instance 3, along the true normal
    normal = np.cross(np.asarray(IOP[:3]), np.asarray(IOP[3:]))
    off = hand_world(positions[numbers.index(3)], IOP, spacing, 5, 5) + normal
    got = volume.world_to_competition(off[None])
    assert got.instance_number[0] == 3 and abs(got.distance_mm[0]) == pytest.approx(1.0)


def test_rescale_and_monochrome1(tmp_path):
    n, positions = 3, parallel_positions((0, 0, 0), SAGITTAL, 3, 4.0)
    stored = default_pixels(n, 16, 16)
    write_series(tmp_path / "r", SeriesSpec(SAGITTAL, positions, rows=16, columns=16,
                                            rescale=(0.5, -100.0)))
    write_series(tmp_path / "m", SeriesSpec(SAGITTAL, positions, rows=16, columns=16,
                                            photometric="MONOCHROME1", rescale=(2.0, 10.0)))
    (rescaled,) = load_series(tmp_path / "r")
    np.testing.assert_allclose(rescaled.pixels, stored * 0.5 - 100.0)
    (inverted,) = load_series(tmp_path / "m")
    values = stored * 2.0 + 10.0
    np.testing.assert_allclose(inverted.pixels, values.min() + values.max() - values)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
def test_compressed_series_decode(tmp_path, syntax):
    positions = parallel_positions((0, 0, 0), SAGITTAL, 3, 4.0)
    write_series(tmp_path, SeriesSpec(SAGITTAL, positions, rows=40, columns=56,
                                      transfer_syntax=syntax))
    assert pydicom.dcmread(tmp_path / "1.dcm").file_meta.TransferSyntaxUID == syntax
    (volume,) = load_series(tmp_path)
    np.testing.assert_array_equal(volume.pixels, default_pixels(3, 40, 56))
    assert volume.issues == ()


@pytest.mark.parametrize("name", [
    "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
])  # fmt: skip
def test_pydicom_mr_files_match_reference(tmp_path, name):
    """pydicom's real MR slice in several encodings decodes to MR_small's pixel_array."""
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    shutil.copy(get_testdata_file(name), tmp_path / name)
    (volume,) = load_series(tmp_path, policy="raise")
    np.testing.assert_array_equal(volume.pixels[0], reference.pixel_array.astype(np.float32))
    ipp = [float(v) for v in reference.ImagePositionPatient]
    spacing = [float(v) for v in reference.PixelSpacing]
    expected = hand_world(ipp, reference.ImageOrientationPatient, spacing, 10, 20)
    np.testing.assert_allclose(volume.competition_to_world(1, 10, 20), expected, atol=1e-6)
    assert volume.plane.value == "axial"


@pytest.mark.parametrize("signed", [0, 1])
def test_bits_stored_below_allocated_like_pydicom(tmp_path, signed):
    """The uncompressed fast path masks / sign-extends exactly as pydicom's pixel_array."""
    stored = np.full((1, 32, 32), 0xF80F, np.uint16)
    stored[0, :, 5] = 0x0ABC
    write_series(tmp_path, SeriesSpec(SAGITTAL, np.zeros((1, 3)), pixels=stored,
                                      extra={"BitsStored": 12, "HighBit": 11,
                                             "PixelRepresentation": signed}))
    (volume,) = load_series(tmp_path)  # reads raw bytes at the indexed offset
    expected = pydicom.dcmread(tmp_path / "1.dcm").pixel_array.astype(np.float32)
    np.testing.assert_array_equal(volume.pixels[0], expected)
    parsed, _ = decode_slice(tmp_path / "1.dcm")  # parses the file itself
    np.testing.assert_array_equal(parsed, expected)


def test_truncated_slice_zero_filled_or_raised(tmp_path):
    positions = parallel_positions((0, 0, 0), SAGITTAL, 4, 4.0)
    paths = write_series(tmp_path, SeriesSpec(SAGITTAL, positions, rows=16, columns=16))
    (stack,) = build_stacks(_index_frame(tmp_path))  # indexed while intact
    truncate(paths[2], 0.6)
    volume = read_stack(stack, tmp_path, ReadPolicy.SKIP)
    failed = [i for i in volume.issues if i.code.value == "decode_failed"]
    assert len(failed) == 1 and failed[0].path == "3.dcm" and failed[0].study_id == 5
    assert not volume.pixels[volume.slice_of(3)].any()
    np.testing.assert_array_equal(volume.pixels[volume.slice_of(2)], default_pixels(4, 16, 16)[1])
    with pytest.raises(DecodeError, match="3.dcm"):
        read_stack(stack, tmp_path, ReadPolicy.RAISE)
    for path in paths:
        truncate(path, 0.3)
    with pytest.raises(DicomReadError, match="none of the 4 slices"):
        read_stack(stack, tmp_path, ReadPolicy.SKIP)
    ((_, volume, issues),) = list(read_volumes([stack], tmp_path, policy="skip"))
    assert volume is None and issues[0].code.value == "decode_failed"


def test_read_volumes_in_processes_matches_in_process(tmp_path):
    stacks = []
    for s in range(3):
        folder = tmp_path / str(s)
        write_series(folder, SeriesSpec(IOP, parallel_positions((s, 0, 0), IOP, 4, 3.0),
                                        rows=24, columns=16))
        stacks.extend((folder, st) for st in build_stacks(_index_frame(folder)))
    serial = [read_stack(st, folder) for folder, st in stacks]
    # paths are relative to each folder: give the pool absolute ones through a common root
    rebased = [st.__class__(**{**st.__dict__, "paths": tuple(str(f / p) for p in st.paths)})
               for f, st in stacks]  # fmt: skip
    pooled = [v for _, v, _ in read_volumes(rebased, "/", workers=2)]
    for a, b in zip(serial, pooled):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        np.testing.assert_array_equal(a.affine, b.affine)


def test_volume_validates_its_parts():
    with pytest.raises(ValueError, match="slices, rows, cols"):
        Volume(np.zeros((4, 4), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="2 instance numbers for 3 slices"):
        Volume(np.zeros((3, 2, 2), np.float32), np.eye(4), instance_numbers=[1, 2])
    volume = Volume(np.zeros((3, 2, 2), np.float32), np.eye(4))
    np.testing.assert_array_equal(volume.instance_numbers, [1, 2, 3])
    with pytest.raises(ValueError, match="another stack"):
        volume.slice_of(9)
