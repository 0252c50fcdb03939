"""The real ``totalspineseg`` command, offline, on the phantom, with hand-set weights (live).

Run with ``make test-live`` (builds ``.tss-venv`` first) or, with the environment built,
``.venv/bin/python -m pytest -m live -s tests/test_tss_live.py``. Skipped, with the reason,
when the TotalSpineSeg environment is absent. About 3–5 min on 2 cores: one full run (steps 1
and 2) on the phantom and one step-1 run on a phantom without the landmark disc.
Set ``RSNA_TSS_DEVICE=cuda`` to run it on a GPU.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tss_fixture as fx

from rsna_lumbar.dicom.nifti import to_nifti
from rsna_lumbar.dicom.volume import Volume
from rsna_lumbar.localize import (
    LabelMap,
    PointKind,
    TotalSpineSeg,
    TotalSpineSegFailed,
    TotalSpineSegUnavailable,
    points_from_labels,
    run_totalspineseg,
    tss_level_finder,
)
from rsna_lumbar.localize.stage import LevelSourceLog, usable_levels
from rsna_lumbar.localize.totalspineseg import _python_of, find_executable, output_name
from rsna_lumbar.vocabulary import LEVELS

pytestmark = pytest.mark.live
DEVICE = os.environ.get("RSNA_TSS_DEVICE", "cpu")
STUDY, SERIES, BAD_STUDY = 101, 202, 303


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    try:
        exe = find_executable()
    except TotalSpineSegUnavailable as err:
        reason = f"TotalSpineSeg environment absent ({str(err).splitlines()[0]}); run `make tss-env`"
        print(f"\nSKIP live TotalSpineSeg test: {reason}", file=sys.stderr)
        pytest.skip(reason)
    python = _python_of(exe)
    if python is None:
        pytest.skip(f"cannot tell the Python of {exe} to build the weights fixture")
    root = tmp_path_factory.mktemp("tss") / "weights"
    t0 = time.monotonic()
    subprocess.run([str(python), str(Path(fx.__file__)), "weights", str(root)], check=True,
                   capture_output=True)
    print(f"\nlive: hand-set weights built in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return exe, root


@pytest.fixture(scope="module")
def full_run(weights, tmp_path_factory):
    exe, root = weights
    tss = TotalSpineSeg.from_env(executable=exe, data_dir=root, device=DEVICE, step1_only=False,
                                 timeout_s=900)
    volume = Volume(fx.phantom()["image"], fx.lps_affine(), study_id=STUDY, series_id=SERIES)
    cache = tmp_path_factory.mktemp("cache")
    t0 = time.monotonic()
    points = run_totalspineseg(volume, cache_dir=cache, tss=tss)
    seconds = time.monotonic() - t0
    print(f"\nlive: TotalSpineSeg steps 1+2 on the phantom ({DEVICE}): {seconds:.0f} s",
          file=sys.stderr)
    out = next(cache.glob(f"{STUDY}/{SERIES}-*/out"))
    return {"tss": tss, "volume": volume, "cache": cache, "out": out, "points": points}


def _read(out: Path, folder: str) -> nib.Nifti1Image:
    return nib.load(str(out / folder / f"{output_name(STUDY, SERIES)}.nii.gz"))


def test_outputs_are_exact(full_run):
    out = full_run["out"]
    exported = to_nifti(full_run["volume"])
    truth = fx.phantom()
    for folder, expected in (("step1_output", truth["step1"]), ("step2_output", truth["truth"])):
        img = _read(out, folder)
        assert img.shape == exported.shape, folder
        np.testing.assert_allclose(img.affine, exported.affine, atol=1e-5, err_msg=folder)
        labels = np.asanyarray(img.dataobj).transpose(2, 1, 0)  # back to (S, R, C)
        assert set(np.unique(labels).tolist()) == set(np.unique(expected).tolist()), folder
        assert (labels == expected).all(), f"{folder}: {(labels != expected).sum()} voxels differ"
    levels = np.asanyarray(_read(out, "step1_levels").dataobj)
    assert sorted(np.unique(levels).tolist()) == [0, 21, 22, 23, 24, 25]
    assert all((levels == v).sum() == 1 for v in range(21, 26))


def test_level_points_in_world_coordinates(full_run):
    points, expected = full_run["points"], fx.expected_points()
    assert points.source == "totalspineseg" and points.ok and points.flags == ()
    assert points.confidence == 1.0 and (points.study_id, points.series_id) == (STUDY, SERIES)
    assert points.present == LEVELS
    for kind in PointKind:
        np.testing.assert_allclose(points.kind(kind), expected[kind.value], atol=1e-4)
    z = points.kind(PointKind.DISC_CENTRE)[:, 2]
    assert (np.diff(z) < 0).all(), "discs must come cranial to caudal"


def test_tool_level_points_sit_on_the_posterior_disc_edges(full_run):
    name = output_name(STUDY, SERIES)
    levels = LabelMap.load(full_run["out"] / "step1_levels" / f"{name}.nii.gz")
    step1 = LabelMap.load(full_run["out"] / "step1_output" / f"{name}.nii.gz")
    edges = fx.expected_points()["disc_posterior"]
    for level in LEVELS:
        mask = levels.labels == 21 + level.index
        col, row, slc = np.argwhere(mask)[0]  # NIfTI index = (col, row, slice)
        assert step1.labels[col, row, slc] == fx.DISCS[level.index], f"{level.title}: not in its disc"
        assert col == fx.BODY_COLS[1] - 1, f"{level.title}: not on the posterior disc edge"
        assert fx.CANAL_SLICES[0] <= slc < fx.CANAL_SLICES[1], f"{level.title}: off the canal"
        # TotalSpineSeg picks one edge voxel (any row of the disc): within half a disc height
        distance = np.linalg.norm(levels.world(mask)[0] - edges[level.index])
        assert distance <= fx.DISC_H / 2 + 1, level.title


def test_step1_map_alone_gives_the_same_points(full_run):
    out = full_run["out"]
    name = output_name(STUDY, SERIES)
    step1 = points_from_labels(LabelMap.load(out / "step1_output" / f"{name}.nii.gz"),
                               levels=LabelMap.load(out / "step1_levels" / f"{name}.nii.gz"))
    assert step1.flags == () and step1.confidence == 1.0
    np.testing.assert_allclose(step1.points, full_run["points"].points, atol=1e-6)


def test_second_call_is_served_from_the_cache(full_run):
    log_file = next(full_run["out"].parent.glob("tss.log"))
    before = log_file.stat().st_mtime_ns
    t0 = time.monotonic()
    again = run_totalspineseg(full_run["volume"], cache_dir=full_run["cache"], tss=full_run["tss"])
    assert time.monotonic() - t0 < 15 and log_file.stat().st_mtime_ns == before
    np.testing.assert_allclose(again.points, full_run["points"].points)


def test_points_stage_level_finder_takes_the_program_result(full_run, caplog):
    find = tss_level_finder(full_run["tss"], full_run["cache"])  # what `--tss` builds
    log = LevelSourceLog()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        found = usable_levels(find, full_run["volume"], STUDY, log)
    assert time.monotonic() - t0 < 15, "the full run's cached output should serve it"
    assert found is not None and found.source == "totalspineseg" and log.used == 1
    np.testing.assert_allclose(found.points, full_run["points"].points)
    assert not caplog.records and log.summary() == "level finder used for 1 of 1 studies"


def test_missing_landmark_fails_clearly_and_falls_back(weights, tmp_path, caplog):
    exe, root = weights
    tss = TotalSpineSeg.from_env(executable=exe, data_dir=root, device=DEVICE, timeout_s=900)
    volume = Volume(fx.phantom(landmark=False)["image"], fx.lps_affine(), study_id=BAD_STUDY,
                    series_id=SERIES)
    log = LevelSourceLog()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rsna_lumbar.localize"):
        found = usable_levels(tss_level_finder(tss, tmp_path), volume, BAD_STUDY, log)
    print(f"\nlive: TotalSpineSeg step 1, no landmark ({DEVICE}): {time.monotonic() - t0:.0f} s",
          file=sys.stderr)
    assert found is None, "the learned localiser must serve the study"
    assert log.reasons == {"the level finder raised TotalSpineSegFailed": 1}
    assert "TotalSpineSeg failed on study 303 series 202" in caplog.text
    with pytest.raises(TotalSpineSegFailed) as err:  # the failure is cached: no second run
        run_totalspineseg(volume, cache_dir=tmp_path, tss=tss)
    assert err.value.returncode == 1 and "landmarks" in err.value.stderr_tail
    assert "cached" in str(err.value)
