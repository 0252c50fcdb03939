"""Learned localiser, fast tests: grid geometry round trips, heatmap decoding, model folder,
real-exam wrapping and the level criterion. No training here (see test_localize_real.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rsna_lumbar.dicom.volume import Volume
from rsna_lumbar.geometry.affine import slice_affine
from rsna_lumbar.localize.keypoints import dataset as D
from rsna_lumbar.localize.keypoints.model import STRIDE, HeatmapNet, decode_peaks, load_models, save_models
from rsna_lumbar.localize.keypoints.realworld import measure, real_exams, real_truth, real_volume
from rsna_lumbar.vocabulary import LEVELS, Condition, Level


def _volume(shape=(9, 300, 260), pixel_spacing=(0.9, 0.7)) -> Volume:
    iop = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal
    affine = slice_affine(iop, (-16.0, -90.0, 120.0), pixel_spacing, (4.0, 0.0, 0.0))
    return Volume(pixels=np.random.default_rng(0).random(shape, dtype=np.float32), affine=affine,
                  study_id=7, series_id=8, instance_numbers=np.arange(9, 0, -1))


def test_label_point_round_trips_through_grid_target_and_decoder():
    """voxel → canonical grid → augmented input → Gaussian target → decoded peak → voxel."""
    task = D.TASKS["sag_t2"]
    volume = _volume()
    labels = pd.DataFrame({"instance_number": [4], "x": [141.3], "y": [97.8],
                           "condition": [Condition.SPINAL_CANAL_STENOSIS.title],
                           "level": [Level.L3_L4.title]})  # fmt: skip
    sample = D.series_sample(volume, labels, task)
    k = volume.slice_of(4)
    assert sample.points[0, 0] == Level.L3_L4.index and sample.points[0, 3] == k
    rng = np.random.default_rng(3)
    a = D.input_to_canon(task, 1.1, 7.0, (12.0, -9.0))
    uv = (D.invert(a) @ np.r_[sample.points[0, 1:3], 1.0])
    target = D.heatmap_target(task, uv[None], np.ones(1), np.array([Level.L3_L4.index]))
    assert target.shape == (5, task.input_px // STRIDE, task.input_px // STRIDE)
    peak_uv, score = decode_peaks(torch.from_numpy(target))
    assert score[Level.L3_L4.index] > 0.7 and score[0] == 0  # grid-sampled peak
    back = D.compose(D.grid_to_voxel(volume, task.canon_px, task.canon_mm), a) @ np.r_[
        peak_uv[Level.L3_L4.index].numpy(), 1.0]
    np.testing.assert_allclose(back, [141.3, 97.8], atol=0.6)  # < 1 mm
    x, y = D.draw(sample, task, rng, augment=True)
    assert x.shape == (3, task.input_px, task.input_px) and np.isfinite(x).all()
    assert y.shape == (5, task.input_px // STRIDE, task.input_px // STRIDE) and y.max() <= 1.0


def test_slice_weight_marks_only_neighbouring_slices():
    task = D.TASKS["sag_t2"]
    sample = D.SeriesSample(1, 2, np.zeros((9, task.canon_px, task.canon_px), np.float16),
                            np.array([[2, 100.0, 90.0, 4.0]]), 4.0)  # fmt: skip
    rng = np.random.default_rng(0)
    peaks = [D.draw(sample, task, rng, augment=False, k=k)[1][2].max() for k in range(9)]
    assert np.argmax(peaks) == 4 and peaks[4] > 0.9
    assert peaks[2] == 0 and peaks[6] == 0 and 0 < peaks[3] < 0.5


def test_model_folder_round_trip(tmp_path):
    torch.manual_seed(0)
    model = HeatmapNet("resnet18", 3, 5).eval()
    x = torch.rand(1, 3, 64, 64)
    config = {"backbone": "resnet18", "tasks": {"sag_t2": D.TASKS["sag_t2"].as_config()}}
    save_models(tmp_path / "loc", config, {"sag_t2": [model]})
    loaded_config, models = load_models(tmp_path / "loc")
    assert loaded_config["files"]["sag_t2"] == ["sag_t2_fold0.safetensors"]
    with torch.no_grad():
        assert model(x).shape == (1, 5, 16, 16)
        torch.testing.assert_close(models["sag_t2"][0](x), model(x))
    with pytest.raises(FileNotFoundError, match="rsna-lumbar localize --split train"):
        load_models(tmp_path / "missing")


needs_real = pytest.mark.skipif(not real_exams(), reason="shared/data/real-lumbar not present")


@needs_real
def test_real_exam_wrapping_puts_truth_on_the_discs():
    path = real_exams()[0]
    volume, truth = real_volume(path), real_truth(path)
    discs = np.load(path)["discs"]
    assert volume.plane.value == "sagittal" and volume.shape == (17, 221, 221)
    assert truth.edge_z.is_monotonic_decreasing  # L1/L2 highest (LPS +z is superior)
    for i, row in truth.iterrows():
        col, r, k = volume.world_to_voxel(np.array([row.centre_x, row.centre_y, row.centre_z]))
        assert discs[int(round(r)), int(round(col)), int(round(k * 4 + 1))] == 5 - i
        # the posterior edge is behind the centre and just outside the disc
        assert row.edge_y > row.centre_y + 8
    # pixels of the Volume are the source plane
    np.testing.assert_array_equal(volume.pixels[3], np.load(path)["image"][:, :, 13])


@needs_real
def test_level_criterion_accepts_right_disc_and_rejects_neighbour():
    truth = real_truth(real_exams()[1])
    rows = []
    for level in LEVELS:
        edge = truth.loc[level.index, ["edge_x", "edge_y", "edge_z"]].to_numpy(float)
        rows.append({"level": level.title, "world_x": edge[0], "world_y": edge[1] + 6.0,
                     "world_z": edge[2], "confidence": 0.9})  # fmt: skip
    ok = measure(rows, truth)
    assert ok.correct.all() and np.allclose(ok.error_mm, 6.0) and np.allclose(ok.cc_error_mm, 0)
    shifted = [dict(r, world_z=truth.edge_z[min(i + 1, 4)]) for i, r in enumerate(rows)]
    bad = measure(shifted, truth)
    assert bad.correct.tolist() == [False, False, False, False, True]
    assert bad.landed_on.tolist()[:4] == [lv.title for lv in LEVELS[1:]]
