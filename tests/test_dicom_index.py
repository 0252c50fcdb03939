"""Header index over a written split, with every kind of bad input; the ``index`` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from rsna_lumbar.cli import main
from rsna_lumbar.dicom.index import INDEX_COLUMNS, index_split, read_index, write_index
from tests.dicom_factory import (
    AXIAL,
    SAGITTAL,
    SeriesSpec,
    StudySpec,
    parallel_positions,
    truncate,
    write_descriptions,
    write_split,
)

SAG = SeriesSpec(SAGITTAL, parallel_positions((-10, -90, 50), SAGITTAL, 5, 3.5), rows=24,
                 columns=20, pixel_spacing=(0.8, 0.6), slice_thickness=3.0,
                 spacing_between_slices=3.5, rescale=(1.5, -7.0))
AX = SeriesSpec(AXIAL, parallel_positions((-60, -80, -20), AXIAL, 4, 4.0), rows=32, columns=40,
                photometric="MONOCHROME1", transfer_syntax=RLELossless, slice_thickness=None)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_split(root, "train", [
        StudySpec(1, {10: ("Sagittal T2/STIR", SAG), 11: ("Axial T2", AX)}),
        StudySpec(2, {20: ("Sagittal T1", SAG), 21: ("Axial T2", AX)}),
    ])  # fmt: skip
    images = root / "train_images"
    truncate(images / "2/20/3.dcm", 0.5)
    (images / "2/20/junk.dcm").write_bytes(b"not a dicom file at all" * 10)
    ds = pydicom.dcmread(images / "2/21/2.dcm")
    del ds.ImagePositionPatient
    ds.save_as(images / "2/21/2.dcm")
    (images / "2/22").mkdir()  # empty folder, listed below
    (images / "3/30").mkdir(parents=True)  # on disk, unlisted (and empty)
    rows = [(1, 10, "Sagittal T2/STIR"), (1, 11, "Axial T2"), (2, 20, "Sagittal T1"),
            (2, 21, "Axial T2"), (2, 22, "Axial T2"), (2, 23, "Sagittal T1")]  # 23 absent
    write_descriptions(root, "train", rows)
    return root


def test_rows_carry_the_written_header(split):
    result = index_split(split, "train", workers=1, progress=False)
    frame = result.frame
    assert list(frame.columns) == list(INDEX_COLUMNS)
    assert len(frame) == 5 + 4 + (5 - 1) + (4 - 1)  # study 2: truncated, tag-less lost
    row = frame[(frame.series_id == 10) & (frame.instance_number == 4)].iloc[0]
    assert row.path == "train_images/1/10/4.dcm"
    assert row.series_description == "Sagittal T2/STIR"
    np.testing.assert_allclose(row[["ipp_x", "ipp_y", "ipp_z"]].astype(float), SAG.positions[3])
    np.testing.assert_allclose(row[[f"iop_{i}" for i in range(6)]].astype(float), SAGITTAL)
    assert (row.row_spacing, row.col_spacing, row.rows, row["columns"]) == (0.8, 0.6, 24, 20)
    assert (row.slice_thickness, row.spacing_between_slices) == (3.0, 3.5)
    assert (row.rescale_slope, row.rescale_intercept) == (1.5, -7.0)
    assert row.transfer_syntax == ExplicitVRLittleEndian and row.photometric == "MONOCHROME2"
    ax = frame[frame.series_id == 11].iloc[0]
    assert ax.transfer_syntax == RLELossless and ax.photometric == "MONOCHROME1"
    assert np.isnan(ax.slice_thickness) and np.isnan(ax.spacing_between_slices)


def test_every_bad_input_is_reported_by_name(split):
    issues = index_split(split, "train", workers=1, progress=False).issues
    found = {(i.code.value, i.study_id, i.series_id, i.path.split("/")[-1]) for i in issues}
    assert ("unreadable_file", 2, 20, "3.dcm") in found  # truncated
    assert ("unreadable_file", 2, 20, "junk.dcm") in found  # not DICOM
    assert ("missing_tag", 2, 21, "2.dcm") in found
    assert ("empty_series", 2, 22, "22") in found
    assert ("missing_series", 2, 23, "") in found
    assert ("unlisted_series", 3, 30, "") in found
    assert ("missing_optional_tag", 1, 11, "") in found
    truncated = next(i for i in issues if i.path.endswith("20/3.dcm"))
    assert "truncated" in truncated.message and "re-copy" in truncated.message
    tagless = next(i for i in issues if i.code.value == "missing_tag")
    assert "ImagePositionPatient" in tagless.message


def test_process_pool_gives_the_same_table(split):
    one = index_split(split, "train", workers=1, progress=False)
    two = index_split(split, "train", workers=2, progress=False)
    pd.testing.assert_frame_equal(one.frame, two.frame)
    assert sorted(map(str, one.issues)) == sorted(map(str, two.issues))


def test_index_command_writes_skips_and_forces(split, tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["index", "--data", str(split), "--split", "train", "--work", str(work),
                 "--workers", "1"]) == 0
    table = work / "index" / "train.csv"
    issues = pd.read_csv(work / "index" / "train_issues.csv")
    assert {"study_id", "series_id", "path", "code", "message"} <= set(issues.columns)
    frame = read_index(table)
    expected = index_split(split, "train", workers=1, progress=False).frame
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    table.write_text(table.read_text() + "")  # present: the stage must not rewrite it
    stamp = table.stat().st_mtime_ns
    assert write_index(split, "train", work) == table and table.stat().st_mtime_ns == stamp
    write_index(split, "train", work, force=True, workers=1)
    assert table.stat().st_mtime_ns != stamp


def test_missing_split_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data"):
        index_split(tmp_path, "test")
