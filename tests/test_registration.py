"""Sagittal level points → axial slices, against a brute-force answer written in the test.

A rotated patient: a sagittal T2 series, an axial series with two oblique chunks (reversed,
gapped instance numbers) and a second axial series. The expected slice, pixel and distance
come from plain dot products over every written axial slice, not from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rsna_lumbar.cli import main
from rsna_lumbar.dicom.index import index_split
from rsna_lumbar.registration import REGISTER_COLUMNS, register_points
from tests.dicom_factory import (
    AXIAL,
    SAGITTAL,
    SeriesSpec,
    StudySpec,
    rotate_orientation,
    rotation,
    write_split,
)

PATIENT = rotation("z", 4.0) @ rotation("x", -3.0)
SAG_IOP = rotate_orientation(SAGITTAL, PATIENT)
SAG_SPACING = (2.0, 1.8)
ROWS = [12, 22, 32, 42, 52]  # one level every 10 rows, cranial to caudal
LEVELS = ["L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"]


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _sagittal():
    normal = _unit(np.cross(SAG_IOP[:3], SAG_IOP[3:]))
    first = np.array([-25.0, -100.0, 80.0])
    positions = first + np.arange(15)[:, None] * 3.5 * normal
    return SeriesSpec(SAG_IOP, positions, rows=64, columns=64, pixel_spacing=SAG_SPACING)


def _world(sag: SeriesSpec, instance: int, x: float, y: float) -> np.ndarray:
    iop = np.asarray(SAG_IOP)
    return (sag.positions[instance - 1] + x * SAG_SPACING[1] * iop[:3]
            + y * SAG_SPACING[0] * iop[3:])  # fmt: skip


def _chunk(iop, through, at_pixel, offset_slices, n=5, spacing=4.0):
    """Axial positions whose slice plane ``offset_slices`` steps from slice 0 holds ``through``
    at pixel ``at_pixel`` (col, row)."""
    iop = np.asarray(iop, float)
    normal = _unit(np.cross(iop[:3], iop[3:]))
    origin = through - at_pixel[0] * 0.8 * iop[:3] - at_pixel[1] * 0.8 * iop[3:]
    return origin + (np.arange(n) - offset_slices)[:, None] * spacing * normal


def _brute_force(world, axial_series):
    """Smallest |distance| over every slice whose projection lies on the image."""
    best, covered = None, False
    for series_id, spec in axial_series.items():
        iops = np.broadcast_to(np.asarray(spec.orientation, float), (len(spec.positions), 6))
        for k, (ipp, iop) in enumerate(zip(spec.positions, iops)):
            normal = _unit(np.cross(iop[:3], iop[3:]))
            same = np.all(np.abs(iops - iop) < 1e-6, axis=1)  # the slice's own chunk
            spacing = float(np.median(np.diff(np.sort(spec.positions[same] @ normal))))
            d = world - ipp
            col = d @ iop[:3] / spec.pixel_spacing[1]
            row = d @ iop[3:] / spec.pixel_spacing[0]
            dist = d @ normal
            if not (-0.5 <= col <= spec.columns - 0.5 and -0.5 <= row <= spec.rows - 0.5):
                continue
            covered |= abs(dist) <= spacing / 2 + 0.5
            if best is None or abs(dist) < abs(best[4]):
                numbers = spec.instance_numbers or range(1, len(spec.positions) + 1)
                best = (series_id, list(numbers)[k], col, row, dist)
    return best, covered


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg")
    sag = _sagittal()
    worlds = [_world(sag, 8, 30.0, y) for y in ROWS]
    tilt1 = rotate_orientation(AXIAL, PATIENT @ rotation("x", 9.0))
    tilt2 = rotate_orientation(AXIAL, PATIENT @ rotation("x", -6.0))
    # series 20: two chunks in one series; chunk 1 through L1/L2 (exactly on slice 2),
    # chunk 2 through L4/L5, 30 % of a slice past slice 1; reversed, gapped instance numbers
    chunk1 = _chunk(tilt1, worlds[0], (25.25, 30.5), 2)
    chunk2 = _chunk(tilt2, worlds[3], (40.0, 20.75), 1.3)
    ax20 = SeriesSpec(np.vstack([[tilt1] * 5, [tilt2] * 5]), np.vstack([chunk1, chunk2]),
                      rows=64, columns=80, pixel_spacing=(0.8, 0.8),
                      instance_numbers=[30, 28, 26, 24, 22, 10, 9, 8, 7, 6])
    # series 21: one chunk of 3 slices at L2/L3's height, shifted so it still projects inside
    ax21 = SeriesSpec(AXIAL, _chunk(AXIAL, worlds[1] + [0, 0, 6.0], (32, 32), 1, n=3),
                      rows=64, columns=64, pixel_spacing=(0.8, 0.8))
    write_split(root, "train", [
        StudySpec(1, {10: ("Sagittal T2/STIR", sag), 20: ("Axial T2", ax20),
                      21: ("Axial T2", ax21)}),
        StudySpec(2, {10: ("Sagittal T2/STIR", sag)}),  # no axial series
    ])  # fmt: skip
    rows = [(1, 10, 8, "Spinal Canal Stenosis", lv, 30.0, y) for lv, y in zip(LEVELS, ROWS)]
    rows += [(2, 10, 8, "Spinal Canal Stenosis", "L3/L4", 30.0, 32.0),
             (2, 10, 99, "Spinal Canal Stenosis", "L4/L5", 30.0, 42.0),  # no such instance
             (1, 10, 3, "Left Neural Foraminal Narrowing", "L3/L4", 10.0, 10.0)]  # other condition
    pd.DataFrame(rows, columns=["study_id", "series_id", "instance_number", "condition",
                                "level", "x", "y"]).to_csv(root / "train_label_coordinates.csv",
                                                           index=False)  # fmt: skip
    return root, worlds, {20: ax20, 21: ax21}


def test_register_command_matches_brute_force(study, tmp_path):
    root, worlds, axial = study
    out = tmp_path / "registered.csv"
    assert main(["register", "--data", str(root), "--split", "train", "--out", str(out),
                 "--work", str(tmp_path / "work"), "--workers", "1"]) == 0
    table = pd.read_csv(out)
    assert tuple(table.columns) == REGISTER_COLUMNS
    one = table[table.study_id == 1].set_index("level")
    assert list(one.index) == LEVELS
    for level, world in zip(LEVELS, worlds):
        best, covered = _brute_force(world, axial)
        row = one.loc[level]
        assert (int(row.axial_series_id), int(row.instance_number)) == (best[0], best[1]), level
        np.testing.assert_allclose([row.x, row.y, row.distance_mm],
                                   [best[2], best[3], abs(best[4])], atol=2e-3)
        assert bool(row.covered) == covered, level
    # the designed answers, spelled out
    assert one.loc["L1/L2", ["axial_series_id", "instance_number", "x", "y", "distance_mm"]
                   ].tolist() == [20, 26, 25.25, 30.5, 0.0]  # fmt: skip
    assert one.loc["L4/L5", ["axial_series_id", "instance_number"]].tolist() == [20, 9]
    assert one.loc["L4/L5", "distance_mm"] == pytest.approx(1.2, abs=1e-3)
    assert bool(one.loc["L1/L2", "covered"]) and bool(one.loc["L4/L5", "covered"])
    assert not bool(one.loc["L3/L4", "covered"])  # between the chunks
    two = table[table.study_id == 2]
    assert len(two) == 1 and not two.covered.iloc[0] and math.isnan(two.axial_series_id.iloc[0])


def test_issues_for_missing_axial_and_missing_instance(study):
    root, _, _ = study
    index = index_split(root, "train", workers=1, progress=False).frame
    points = pd.read_csv(root / "train_label_coordinates.csv")
    points = points[points.condition == "Spinal Canal Stenosis"]
    table, issues = register_points(index, points)
    codes = {(i.code.value, i.study_id) for i in issues}
    assert ("no_axial", 2) in codes and ("missing_point", 2) in codes
    assert "99" in next(i.message for i in issues if i.code.value == "missing_point")
    assert len(table) == 6


def test_register_without_points_says_what_to_pass(tmp_path, capsys):
    code = main(["register", "--data", str(tmp_path), "--split", "test", "--out",
                 str(tmp_path / "o.csv")])
    assert code != 0 and "--points" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()
