"""The severity dataset at any slice count: views resized slice by slice, 3 to 7 slices."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from crop_factory import make_crop_cache

from rsna_lumbar.crops.cache import CropCache
from rsna_lumbar.models.dataset import StudyDataset, resize_slices
from rsna_lumbar.training.config import load_config


@pytest.mark.parametrize("n_slices", [5, 7])
@pytest.mark.parametrize("crop_px", [48, 24])  # shrunk (area) and grown (bilinear)
def test_resize_slices_resizes_each_slice_alone(crop_px, n_slices):
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(n_slices, crop_px, crop_px)).astype(np.float16)
    out = resize_slices(stack, 32)
    assert out.shape == (n_slices, 32, 32) and out.dtype == np.float32
    interpolation = cv2.INTER_AREA if crop_px > 32 else cv2.INTER_LINEAR
    for k in range(n_slices):  # no slice leaks into another, the last one alone in its group too
        alone = cv2.resize(stack[k].astype(np.float32), (32, 32), interpolation=interpolation)
        np.testing.assert_array_equal(out[k], alone)
    # three slices give exactly what one three-channel call gives (the 3-slice members unchanged)
    three = cv2.resize(stack[:3].astype(np.float32).transpose(1, 2, 0), (32, 32),
                       interpolation=interpolation).transpose(2, 0, 1)  # fmt: skip
    np.testing.assert_array_equal(resize_slices(stack[:3], 32), three)


@pytest.mark.parametrize("slices", [5, 7])
def test_views_of_more_than_four_slices_are_resized_and_augmented(tmp_path, slices):
    cache_dir, _, _ = make_crop_cache(tmp_path, n_studies=2, slices=7, size=48, missing_view=0.0)
    cache = CropCache(cache_dir)
    augment = load_config("cpu", ["augment.affine_p=1.0", "augment.noise_p=1.0",
                                  "augment.blur_p=1.0"]).augment  # fmt: skip
    common = dict(families=("spinal",), views={"spinal": ("sag_t2", "axial")}, slices=slices, size=32)
    plain = StudyDataset(cache, cache.study_ids, None, **common)[0]["x"]["spinal"]
    assert tuple(plain.shape) == (5, 2, slices, 32, 32)  # levels, views, slices, H, W
    stack = cache.arrays(cache.study_ids[0])["spinal_canal_stenosis/l1_l2/sag_t2"]
    first = (7 - slices) // 2  # the centred window of the 7 cut slices
    np.testing.assert_allclose(plain[0, 0].numpy(), resize_slices(stack[first:first + slices], 32), atol=1e-6)
    augmented = StudyDataset(cache, cache.study_ids, None, augment=augment, **common)[0]["x"]["spinal"]
    assert tuple(augmented.shape) == (5, 2, slices, 32, 32) and np.isfinite(augmented.numpy()).all()
    assert np.abs(augmented.numpy() - plain.numpy()).max() > 0.1
