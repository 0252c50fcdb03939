"""Stacks: grouping, ordering by position, issue flags; plane detection on pydicom's MR2 set.

Expected answers come from the positions the tests write, not from the code under test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from rsna_lumbar.dicom.errors import IssueCode
from rsna_lumbar.dicom.index import index_series
from rsna_lumbar.dicom.stacks import build_stacks, stacks_containing
from rsna_lumbar.geometry.planes import Plane
from tests.dicom_factory import AXIAL, SAGITTAL, SeriesSpec, parallel_positions, write_series


def _stacks(folder: Path, **kwargs):
    rows, issues = index_series(folder, folder, 1, 2)
    frame = pd.DataFrame(rows)
    frame["series_description"] = "Sagittal T1"
    return build_stacks(frame, **kwargs), issues


def _codes(stack) -> set[str]:
    return {i.code.value for i in stack.issues}


@pytest.mark.parametrize("step", [3.3, -3.3], ids=["along-normal", "against-normal"])
def test_order_follows_positions_not_names_or_instance_numbers(tmp_path, step):
    n = 9
    positions = parallel_positions((10.0, -80.0, 40.0), SAGITTAL, n, step)
    rng = np.random.default_rng(0)
    numbers = rng.permutation(np.arange(1, n + 1) * 3)  # gapped and shuffled
    names = [f"z{rng.integers(1e6)}_{k}.dcm" for k in range(n)]  # names say nothing
    write_series(tmp_path, SeriesSpec(SAGITTAL, positions, rows=12, columns=10,
                                      instance_numbers=numbers.tolist(), file_names=names))
    (stack,), _ = _stacks(tmp_path)
    # Independent expectation: sort by x-coordinate along the normal (-x for this IOP).
    normal = np.cross(SAGITTAL[:3], SAGITTAL[3:])
    order = np.argsort(positions @ normal)
    np.testing.assert_allclose(stack.positions, positions[order])
    np.testing.assert_array_equal(stack.instance_numbers, numbers[order])
    assert stack.slice_spacing == pytest.approx(3.3)
    assert IssueCode.INSTANCE_GAP.value in _codes(stack)
    assert stack.plane is Plane.SAGITTAL
    # The affine's slice column is the step between sorted positions.
    np.testing.assert_allclose(stack.affine[:3, 2], positions[order][1] - positions[order][0])


def test_two_orientations_and_shapes_make_two_stacks(tmp_path):
    a = parallel_positions((0, 0, 0), AXIAL, 5, 4.0)
    tilted = (1.0, 0.0, 0.0, 0.0, np.cos(0.2), np.sin(0.2))
    b = parallel_positions((0, 0, 60), tilted, 4, 4.0)
    write_series(tmp_path, SeriesSpec(AXIAL, a, rows=16, columns=20))
    write_series(tmp_path, SeriesSpec(tilted, b, rows=18, columns=20,
                                      instance_numbers=list(range(6, 10))))
    stacks, _ = _stacks(tmp_path)
    assert [s.n_slices for s in stacks] == [5, 4]
    assert [s.rows for s in stacks] == [16, 18]
    assert stacks[1].orientation == pytest.approx(tilted)
    for s in stacks:
        assert {"multiple_stacks", "mixed_shapes"} <= _codes(s)
    assert [s.stack_index for s in stacks_containing(stacks, 7)] == [1]


def test_duplicate_positions_keep_lowest_instance(tmp_path):
    pos = parallel_positions((0, 0, 0), AXIAL, 4, 5.0)
    write_series(tmp_path, SeriesSpec(AXIAL, np.vstack([pos, pos[2:3]]), rows=8, columns=8,
                                      instance_numbers=[1, 2, 3, 4, 9]))
    (stack,), _ = _stacks(tmp_path)
    np.testing.assert_array_equal(stack.instance_numbers, [1, 2, 3, 4])
    assert "duplicate_positions" in _codes(stack)
    assert "9" in next(i.message for i in stack.issues if i.code.value == "duplicate_positions")


def test_position_gap_splits_into_regular_stacks(tmp_path):
    pos = parallel_positions((0, 0, 0), AXIAL, 10, 4.0)
    pos = np.delete(pos, [6, 7], axis=0)  # two slices missing after the sixth
    write_series(tmp_path, SeriesSpec(AXIAL, pos, rows=8, columns=8))
    stacks, _ = _stacks(tmp_path)
    assert [s.n_slices for s in stacks] == [6, 2]
    for s in stacks:
        assert "slice_gap" in _codes(s)
        # every slice's position is exactly what the affine says
        for k, p in enumerate(s.positions):
            np.testing.assert_allclose(s.affine @ [0, 0, k, 1], [*p, 1], atol=1e-9)


def test_single_slice_spacing_falls_back_on_optional_tags(tmp_path):
    pos = parallel_positions((0, 0, 0), AXIAL, 1, 1.0)
    write_series(tmp_path / "a", SeriesSpec(AXIAL, pos, slice_thickness=3.5,
                                            spacing_between_slices=4.5))
    write_series(tmp_path / "b", SeriesSpec(AXIAL, pos, slice_thickness=3.5))
    write_series(tmp_path / "c", SeriesSpec(AXIAL, pos, slice_thickness=None))
    (a,), _ = _stacks(tmp_path / "a")
    (b,), _ = _stacks(tmp_path / "b")
    (c,), issues = _stacks(tmp_path / "c")
    assert a.slice_spacing == 4.5 and b.slice_spacing == 3.5 and np.isnan(c.slice_spacing)
    assert [i.code for i in issues] == [IssueCode.MISSING_OPTIONAL_TAG]
    np.testing.assert_allclose(c.affine[:3, 2], [0, 0, 1])  # unit normal when unknown


def test_mr2_localiser_planes_from_pydicom_files(tmp_path):
    """pydicom's MR2 pilot series: one coronal, one sagittal, one axial slice."""
    folder = Path(get_testdata_file("MR_small.dcm")).parent / "dicomdirtests/98892003/MR2"
    uid = pydicom.dcmread(folder / "4950", stop_before_pixels=True).SeriesInstanceUID
    expected = {}
    for path in folder.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.SeriesInstanceUID == uid:
            shutil.copy(path, tmp_path / path.name)
            iop = np.array(ds.ImageOrientationPatient, float)
            axis = int(np.argmax(np.abs(np.cross(iop[:3], iop[3:]))))
            expected[int(ds.InstanceNumber)] = ["sagittal", "coronal", "axial"][axis]
    assert sorted(expected.values()) == ["axial", "coronal", "sagittal"]
    stacks, _ = _stacks(tmp_path)
    assert len(stacks) == 3
    got = {int(s.instance_numbers[0]): s.plane.value for s in stacks}
    assert got == expected
    assert all("multiple_stacks" in _codes(s) for s in stacks)
