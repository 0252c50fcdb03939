"""Training jitter sized from the localiser's error: the error split per crop view, the sizing
rule, the config key, and the dataset applying it per view."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from crop_factory import make_crop_cache

from rsna_lumbar.crops.cache import CropCache
from rsna_lumbar.localize.evaluate import evaluate, split_error
from rsna_lumbar.localize.keypoints.train import study_stacks
from rsna_lumbar.models.dataset import StudyDataset
from rsna_lumbar.tables import read_label_coordinates
from rsna_lumbar.training.config import ConfigError, load_config
from rsna_lumbar.training.jitter import CROP_FRACTION_CAP, jitter_override, point_jitter_from


def test_split_error_separates_in_plane_and_slices():
    in_plane, slices = split_error(np.array([3.0, 4.0, 8.0]), np.array([0.0, 0.0, 1.0]), 4.0)
    assert in_plane == pytest.approx(5.0) and slices == pytest.approx(2.0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from rsna_lumbar.synth.generate import generate

    root = tmp_path_factory.mktemp("jitter")
    data = generate(root / "data", studies=2, seed=3, test_studies=0, workers=1, scale=4)
    stacks = study_stacks(data, "train", root / "work", workers=1)
    coords = read_label_coordinates(data / "train_label_coordinates.csv")
    return stacks, coords


def _predicted(coords: pd.DataFrame, stacks: dict, shift_mm: np.ndarray) -> pd.DataFrame:
    """The labelled points as predictions (world LPS mm), moved by ``shift_mm``."""
    from rsna_lumbar.dicom.placement import competition_to_world

    world = np.array([competition_to_world(stacks[(r.study_id, r.series_id)], int(r.instance_number),
                                           r.x, r.y) for r in coords.itertuples()])  # fmt: skip
    world = world + shift_mm
    return coords.assign(world_x=world[:, 0], world_y=world[:, 1], world_z=world[:, 2],
                         source="test", confidence=1.0)  # fmt: skip


def test_view_errors_split_a_left_right_shift_by_view(synth):
    stacks, coords = synth
    exact = evaluate(_predicted(coords, stacks, np.zeros(3)), coords, stacks)["view_errors"]
    for views in exact.values():
        for entry in views.values():
            assert entry["in_plane_p75_mm"] < 1e-6 and entry["slices_p75"] < 1e-6
    moved = evaluate(_predicted(coords, stacks, np.array([6.0, 0.0, 0.0])), coords, stacks)["view_errors"]
    assert set(moved) == {"spinal", "foraminal", "subarticular"}
    assert set(moved["spinal"]) == {"sag_t2", "axial"}
    # left–right is through-plane on sagittal series (slices of ~3.5–4.5 mm), in-plane on axial
    for family, view in (("spinal", "sag_t2"), ("foraminal", "sag_t1")):
        assert moved[family][view]["in_plane_p50_mm"] < 1.0
        assert 1.1 < moved[family][view]["slices_p50"] < 2.0
    for family in ("spinal", "subarticular"):
        assert moved[family]["axial"]["in_plane_p50_mm"] == pytest.approx(6.0, abs=0.7)
        assert moved[family]["axial"]["slices_p50"] < 0.4


def _metrics(folder, errors):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"view_errors": errors}))
    return folder


def test_jitter_is_the_75th_percentile_capped_by_the_crop(tmp_path):
    errors = {"spinal": {"sag_t2": {"in_plane_p75_mm": 7.4, "slices_p75": 1.2},
                         "axial": {"in_plane_p75_mm": 30.0, "slices_p75": 3.3}},
              "foraminal": {"sag_t1": {"in_plane_p75_mm": 25.0, "slices_p75": 2.0}}}
    jitter = point_jitter_from(_metrics(tmp_path / "loc", errors))
    assert jitter["spinal"]["sag_t2"] == (7.4, 1)
    assert jitter["spinal"]["axial"] == (CROP_FRACTION_CAP * 48.0, 1)  # 48 mm, 3-slice crop
    assert jitter["foraminal"]["sag_t1"] == (CROP_FRACTION_CAP * 40.0, 2)  # 40 mm, 5 slices
    config = load_config("cpu", [jitter_override(tmp_path / "loc")])
    assert config.data.point_jitter["foraminal"]["sag_t1"] == (10.0, 2)
    with pytest.raises(KeyError, match="retrain it"):
        point_jitter_from(_metrics(tmp_path / "old", {}))
    with pytest.raises(FileNotFoundError, match="--jitter-from"):
        point_jitter_from(tmp_path / "missing")


def test_config_rejects_unknown_views_and_negative_amounts():
    with pytest.raises(ConfigError, match="point_jitter.foraminal"):
        load_config("cpu", ["data.point_jitter={foraminal: {axial: [3, 1]}}"])
    with pytest.raises(ConfigError, match="≥ 0"):
        load_config("cpu", ["data.point_jitter={spinal: {sag_t2: [-1, 0]}}"])


def test_dataset_jitters_each_view_by_its_own_amount(tmp_path):
    cache_dir, _, _ = make_crop_cache(tmp_path, n_studies=2, slices=5, size=32, missing_view=0.0)
    cache = CropCache(cache_dir)
    augment = load_config("cpu", ["augment.affine_p=1.0", "augment.rotate=0.0", "augment.scale=0.0",
                                  "augment.translate=0.25", "augment.brightness_contrast_p=0.0",
                                  "augment.noise_p=0.0",
                                  "augment.blur_p=0.0"]).augment  # fmt: skip
    common = dict(families=("spinal",), views={"spinal": ("sag_t2", "axial")}, slices=3, size=32)
    plain = StudyDataset(cache, cache.study_ids, None, **common)[0]["x"]["spinal"]
    # sag_t2 held still (0 mm, 0 slices); axial keeps the generic ±25 % translation
    item = StudyDataset(cache, cache.study_ids, None, augment=augment, slice_jitter=1,
                        point_jitter={"spinal": {"sag_t2": (0.0, 0)}}, **common)[0]["x"]["spinal"]  # fmt: skip
    np.testing.assert_allclose(item[:, 0], plain[:, 0], atol=1e-5)
    assert np.abs(item[:, 1] - plain[:, 1]).max() > 0.5


def test_training_shifts_of_a_view_cut_with_context_recut_real_anatomy():
    from rsna_lumbar.crops.recipes import geometry_from_settings
    from rsna_lumbar.crops.sampling import window

    geometry = geometry_from_settings({"spinal": {"sag_t2": {"mm": 32, "px": 32, "slices": 3,
                                                             "context_mm": 4, "context_slices": 1}}})
    spec = geometry["spinal"]["sag_t2"]
    k, r, c = np.meshgrid(np.arange(5), np.arange(40), np.arange(40), indexing="ij")
    ramp = (c + 50.0 * r + 3000.0 * k).astype(np.float32)  # every pixel says where it was cut

    class Cache:  # the in-memory duck type of CropCache the predictor uses too
        def __init__(self):
            self.geometry = geometry

        def arrays(self, study_id):
            return {f"spinal_canal_stenosis/{level}/sag_t2": ramp for level in
                    ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")}

    augment = load_config("cpu", ["augment.affine_p=1.0", "augment.rotate=0.0", "augment.scale=0.0",
                                  "augment.translate=0.25", "augment.brightness_contrast_p=0.0",
                                  "augment.noise_p=0.0",
                                  "augment.blur_p=0.0"]).augment  # fmt: skip
    common = dict(families=("spinal",), views={"spinal": ("sag_t2",)}, slices=3, size=32)
    plain = StudyDataset(Cache(), [1], None, **common)[0]["x"]["spinal"][:, 0].numpy()
    np.testing.assert_array_equal(plain[0], window(ramp, spec))  # evaluation: the centred view
    shifted = StudyDataset(Cache(), [1], None, augment=augment, slice_jitter=1, **common)
    offsets = set()
    for epoch in range(3):
        shifted.set_epoch(epoch)
        for view in shifted[0]["x"]["spinal"][:, 0].numpy():
            # a whole ramp, no reflected or repeated edge: exactly a window of the cut
            np.testing.assert_array_equal(view - view[0, 0, 0], ramp[:3, :32, :32] - ramp[0, 0, 0])
            first = view[0, 0, 0]
            offsets.add((int(first // 3000) - 1, int(first % 3000 // 50) - 4, int(first % 50) - 4))
    assert all(abs(dk) <= 1 and abs(dr) <= 4 and abs(dc) <= 4 for dk, dr, dc in offsets)
    assert len(offsets) > 5  # the shifts vary, in-plane and through the slices


def test_a_share_of_training_draws_reads_the_crops_at_the_localisers_points(tmp_path):
    from rsna_lumbar.training.loop import train_cv

    cache_dir, train_csv, folds_csv = make_crop_cache(tmp_path, n_studies=2, slices=5, size=32,
                                                      missing_view=0.0)  # fmt: skip
    cache = CropCache(cache_dir)

    class Localised:  # the same studies' crops, marked: every pixel 100 higher
        study_ids = cache.study_ids
        geometry = cache.geometry

        def arrays(self, study_id):
            return {k: v.astype(np.float32) + 100.0 for k, v in cache.arrays(study_id).items()}

    still = load_config("cpu", ["augment.affine_p=0.0", "augment.brightness_contrast_p=0.0",
                                "augment.noise_p=0.0",
                                "augment.blur_p=0.0"]).augment  # fmt: skip
    common = dict(families=("spinal",), views={"spinal": ("sag_t2",)}, slices=3, size=32)

    def draws(share: float, augment, epochs: int = 12) -> list[bool]:
        data = StudyDataset(cache, cache.study_ids, None, augment=augment, alternate=Localised(),
                            alternate_share=share, **common)  # fmt: skip
        marked = []
        for epoch in range(epochs):
            data.set_epoch(epoch)
            marked.append(bool(data[0]["x"]["spinal"].mean() > 50))
        return marked

    assert not any(draws(0.0, still)) and all(draws(1.0, still))
    assert 0 < sum(draws(0.5, still)) < 12  # a share, drawn per study and epoch
    assert not any(draws(1.0, None))  # evaluation reads the labelled points' crops only
    config = load_config("cpu", ["data.localised_share=0.5"])
    with pytest.raises(ValueError, match="--localised-crops"):
        train_cv(cache_dir, folds_csv, train_csv, config, tmp_path / "model")
    with pytest.raises(ConfigError, match="localised_share"):
        load_config("cpu", ["data.localised_share=1.5"])
