"""TotalSpineSeg label maps → level points (fast; no TotalSpineSeg needed).

The maps are the phantom of ``tss_fixture.py`` (TotalSpineSeg's label scheme, a sagittal
DICOM-like geometry with an offset origin), written to NIfTI and read back, plus variants
that break one sanity rule each.
"""

from __future__ import annotations

import logging
import os

import nibabel as nib
import numpy as np
import pytest
import tss_fixture as fx

from rsna_lumbar.dicom.volume import Volume
from rsna_lumbar.geometry.affine import ras_to_lps_affine
from rsna_lumbar.localize import (
    Flag,
    LabelMap,
    LevelPoints,
    PointKind,
    TotalSpineSeg,
    TotalSpineSegUnavailable,
    points_from_labels,
    tss_level_finder,
    tss_runner,
)
from rsna_lumbar.localize.stage import LevelSourceLog, usable_levels
from rsna_lumbar.localize.totalspineseg import find_executable, find_weights, usable_data_dir
from rsna_lumbar.localize.tss_labels import DISC_LABELS
from rsna_lumbar.vocabulary import LEVELS, Level


def _load(tmp_path, pixels, name="seg.nii.gz") -> LabelMap:
    return LabelMap.load(fx.write_nifti(pixels, tmp_path / name, dtype=np.uint8))


@pytest.fixture(scope="module")
def maps():
    return fx.phantom()


@pytest.mark.parametrize("scheme", ["truth", "step1"])
def test_points_match_phantom_geometry(tmp_path, maps, scheme):
    result = points_from_labels(_load(tmp_path, maps[scheme]))
    expected = fx.expected_points()
    assert result.flags == () and result.ok and result.confidence == 1.0
    for kind in PointKind:
        np.testing.assert_allclose(result.kind(kind), expected[kind.value], atol=1e-6,
                                   err_msg=kind.value)
    left, right = result.kind(PointKind.FORAMEN_LEFT), result.kind(PointKind.FORAMEN_RIGHT)
    assert (left[:, 0] > right[:, 0]).all()  # LPS: patient left is +x
    z = result.kind(PointKind.DISC_CENTRE)[:, 2]
    assert (np.diff(z) < 0).all()  # cranial to caudal


def test_any_voxel_order_gives_the_same_world_points(tmp_path, maps):
    path = fx.write_nifti(maps["truth"], tmp_path / "a.nii.gz", dtype=np.uint8)
    canonical = nib.as_closest_canonical(nib.load(str(path)))  # what TotalSpineSeg does
    nib.save(canonical, str(tmp_path / "b.nii.gz"))
    a = points_from_labels(LabelMap.load(path))
    b = points_from_labels(LabelMap.load(tmp_path / "b.nii.gz"))
    assert LabelMap.load(tmp_path / "b.nii.gz").labels.shape != maps["truth"].shape[::-1]
    np.testing.assert_allclose(a.points, b.points, atol=1e-6)


def test_missing_level_is_flagged(tmp_path, maps):
    seg = maps["truth"].copy()
    seg[seg == DISC_LABELS[Level.L2_L3]] = 0
    result = points_from_labels(_load(tmp_path, seg))
    assert Flag.MISSING_LEVEL in result.flags and not result.ok
    assert not result.has(Level.L2_L3) and result.present == (
        Level.L1_L2, Level.L3_L4, Level.L4_L5, Level.L5_S1)
    assert result.level_confidence[Level.L2_L3.index] == 0
    assert result.confidence == pytest.approx(0.8)


def test_swapped_labels_break_the_order(tmp_path, maps):
    seg = maps["truth"].copy()
    a, b = seg == 92, seg == 93
    seg[a], seg[b] = 93, 92
    result = points_from_labels(_load(tmp_path, seg))
    assert Flag.ORDER in result.flags and not result.ok and result.confidence <= 0.2


def test_numbering_one_level_too_high_is_detected_against_the_sacrum(tmp_path, maps):
    seg = maps["truth"].copy()
    for label, shifted in zip((92, 93, 94, 95, 100), (91, 92, 93, 94, 95)):
        seg[maps["truth"] == label] = shifted
    result = points_from_labels(_load(tmp_path, seg))
    assert Flag.OFF_BY_ONE in result.flags and Flag.MISSING_LEVEL in result.flags
    assert any("nearest the sacrum is labelled L4/L5" in n for n in result.notes)
    # with step-1 style bone (all 50): the bone below the lowest disc stands for the sacrum
    seg[np.isin(seg, fx.VERTEBRAE)] = 50
    assert Flag.OFF_BY_ONE in points_from_labels(_load(tmp_path, seg, "s1.nii.gz")).flags


def test_extra_disc_below_l5_s1_is_flagged(tmp_path, maps):
    seg = maps["truth"].copy()
    sacrum_rows = np.nonzero((seg == 50).any(axis=(0, 2)))[0]
    seg[:, sacrum_rows[4:8], fx.BODY_COLS[0]: fx.BODY_COLS[1]] = 96  # L5-L6 inside the sacrum
    result = points_from_labels(_load(tmp_path, seg))
    assert {Flag.TRANSITIONAL, Flag.OFF_BY_ONE} <= set(result.flags)


def test_implausible_spacing_is_flagged(tmp_path, maps):
    seg = _load(tmp_path, maps["truth"])
    small = LabelMap(seg.labels, seg.affine @ np.diag([0.3, 0.3, 0.3, 1.0]))  # gaps of 9 mm
    result = points_from_labels(small)
    assert Flag.SPACING in result.flags and result.confidence == pytest.approx(0.5)


def test_step1_levels_cross_check(tmp_path, maps):
    seg = _load(tmp_path, maps["truth"])
    expected = fx.expected_points()["disc_posterior"]
    levels = np.zeros(fx.SHAPE, np.uint8)
    for n, level in enumerate(LEVELS):
        r0, r1 = fx.disc_rows(n)
        levels[fx.CANAL_SLICES[0] + 4, (r0 + r1) // 2, fx.BODY_COLS[1] - 1] = 21 + level.index
    good = points_from_labels(seg, levels=_load(tmp_path, levels, "lv.nii.gz"))
    assert Flag.LEVELS_DISAGREE not in good.flags
    assert np.linalg.norm(good.kind(PointKind.DISC_POSTERIOR) - expected, axis=1).max() < 1.0
    levels[levels == 23] = 0
    levels[fx.CANAL_SLICES[0] + 4, 5, 20] = 23  # L3/L4 point 20+ mm away
    bad = points_from_labels(seg, levels=_load(tmp_path, levels, "lv2.nii.gz"))
    assert Flag.LEVELS_DISAGREE in bad.flags and bad.level_confidence[Level.L3_L4.index] < 1


def test_ras_affine_round_trip():
    a = fx.lps_affine()
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ a
    np.testing.assert_allclose(ras_to_lps_affine(ras), a)


def test_level_points_type(tmp_path, maps):
    result = points_from_labels(_load(tmp_path, maps["truth"])).with_provenance(7, 8)
    rows = result.rows()
    assert len(rows) == 20 and rows[0]["level"] == "L1/L2" and rows[0]["study_id"] == 7
    assert {r["point"] for r in rows} == {k.value for k in PointKind}
    np.testing.assert_allclose(result.point(Level.L4_L5, PointKind.DISC_CENTRE),
                               fx.expected_points()["disc_centre"][3])
    empty = LevelPoints.empty("none", reason="why")
    assert empty.confidence == 0 and empty.rows() == [] and empty.flags == (Flag.FAILED,)
    with pytest.raises(ValueError, match=r"\(5, 4, 3\)"):
        LevelPoints(np.zeros((4, 4, 3)), np.ones(5), 1.0, "x")


def test_missing_program_or_weights_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("RSNA_TSS_BIN", str(tmp_path / "nope"))
    monkeypatch.delenv("TOTALSPINESEG_BIN", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("rsna_lumbar.localize.totalspineseg.KIT_ROOT", tmp_path)
    with pytest.raises(TotalSpineSegUnavailable, match="make tss-env") as err:
        find_executable()
    assert "nope" in str(err.value)
    monkeypatch.setenv("TOTALSPINESEG_DATA", str(tmp_path))
    with pytest.raises(TotalSpineSegUnavailable, match="Dataset101_TotalSpineSeg_step1"):
        find_weights()


def test_unavailable_or_failing_leaves_the_levels_to_the_learned_localiser(tmp_path, monkeypatch,
                                                                            caplog):
    """The points stage's chain (:func:`usable_levels`): without TotalSpineSeg there is no
    level finder, and a finder whose run fails gives no levels; the learned localiser serves
    either way, and the reason is logged."""
    monkeypatch.setenv("TOTALSPINESEG_DATA", str(tmp_path / "no-weights"))
    with caplog.at_level(logging.INFO, logger="rsna_lumbar.localize"):
        assert tss_runner("auto") is None
    assert "TotalSpineSeg not used" in caplog.text
    assert tss_level_finder(None, tmp_path / "cache") is None  # the learned localiser alone
    with pytest.raises(TotalSpineSegUnavailable):
        tss_runner("on")
    script = tmp_path / "totalspineseg"
    script.write_text("#!/bin/sh\necho 'no landmark' >&2\nexit 1\n")
    script.chmod(0o755)
    _fake_models(tmp_path / "weights")
    tss = TotalSpineSeg.from_env(executable=script, data_dir=tmp_path / "weights")
    volume = Volume(fx.phantom()["image"], fx.lps_affine(), study_id=1, series_id=2)
    log = LevelSourceLog()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rsna_lumbar.localize"):
        assert usable_levels(tss_level_finder(tss, tmp_path / "cache"), volume, 1, log) is None
    assert log.summary() == ("level finder used for 0 of 1 studies; learned: 1 × the level "
                             "finder raised TotalSpineSegFailed")
    assert "TotalSpineSeg failed on study 1 series 2" in caplog.text


def _fake_models(root):
    for ds in ("Dataset101_TotalSpineSeg_step1", "Dataset102_TotalSpineSeg_step2"):
        (root / ds / "T__P__3d_fullres" / "fold_0").mkdir(parents=True)


def test_weights_layouts_and_read_only_shim(tmp_path):
    release = tmp_path / "a" / "nnUNet" / "results" / "r20260730"
    _fake_models(release)
    models = find_weights(tmp_path / "a")
    assert models[0].parent == release
    data = usable_data_dir(models, tmp_path / "scratch")  # release layout → shim of links
    assert (data / "nnUNet/results/Dataset101_TotalSpineSeg_step1").resolve() == models[0]
    kaggle = tmp_path / "k" / "totalspineseg-weights"  # unpacked zips one folder down
    _fake_models(kaggle)
    os.chmod(kaggle, 0o555)
    try:
        models = find_weights(tmp_path / "k")
        assert models[1] == kaggle / "Dataset102_TotalSpineSeg_step2"
        tss = TotalSpineSeg(tmp_path / "bin", models, device="cuda")
        argv = tss.command(tmp_path / "x.nii.gz", tmp_path / "out", tmp_path / "data")
        assert {"--no-stalling", "--step1", "--keep-only"} <= set(argv)
        assert argv[argv.index("--device") + 1] == "cuda"
    finally:
        os.chmod(kaggle, 0o755)


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    from rsna_lumbar.synth.generate import generate

    out = tmp_path_factory.mktemp("synth")
    return generate(out, studies=1, seed=1, test_studies=0, workers=1, scale=4)


@pytest.mark.parametrize("step", ["step1_output", "step2_output"])
def test_synthetic_truth_maps_give_the_true_points(synth_set, step):
    import pandas as pd

    truth = pd.read_csv(synth_set / "truth" / "points.csv")
    kinds = {"disc_centre": (PointKind.DISC_CENTRE, 2.5), "disc_posterior": (
        PointKind.DISC_POSTERIOR, 3.0), "left_foramen": (PointKind.FORAMEN_LEFT, 8.0),
        "right_foramen": (PointKind.FORAMEN_RIGHT, 8.0)}
    files = sorted((synth_set / "truth" / "totalspineseg" / step).glob("*.nii.gz"))
    assert len(files) == 2  # Sagittal T1 and T2 of the one study
    for path in files:
        study = int(path.name.split("_")[0])
        result = points_from_labels(LabelMap.load(path))
        assert result.flags == () and result.confidence == 1.0, (path.name, result.notes)
        for structure, (kind, tolerance) in kinds.items():
            rows = truth[(truth.study_id == study) & (truth.structure == structure)]
            expected = rows.set_index("level").loc[[lv.title for lv in LEVELS],
                                                   ["world_x", "world_y", "world_z"]].to_numpy()
            error = np.linalg.norm(result.kind(kind) - expected, axis=1)
            assert error.max() < tolerance, (path.name, structure, error.round(1))
