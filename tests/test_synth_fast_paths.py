"""The generator's shortcuts give what the plain computations give.

Rendering takes three shortcuts for speed: the spine is painted only inside a bounding region,
texture and coil bias are evaluated in their separable plane forms, and DICOM files are
assembled from elements encoded once per stack. Each is checked here against the direct way.
"""

import numpy as np
import pydicom
import pytest

from rsna_lumbar.synth import phantom, severity
from rsna_lumbar.synth.anatomy import sample_spine
from rsna_lumbar.synth.contrast import bias_field, plane_bias_field, plane_texture, texture
from rsna_lumbar.synth.dicom_writer import write_series
from rsna_lumbar.synth.series import (
    number_instances, pixel_world, plan_axial, plan_sagittal, render_grid,
)
from rsna_lumbar.vocabulary import SeriesDescription


def _study(seed: int, severe: bool = False):
    rng = np.random.default_rng([seed, 11])
    latent = severity.sample_latent(rng) + (2.5 if severe else 0.0)
    spine = sample_spine(rng, latent, severity.degeneration_from_latent(latent))
    plans = [plan_sagittal(rng, spine, 1, SeriesDescription.SAGITTAL_T1, "T1", 2.0)]
    plans += plan_axial(rng, spine, [2, 3], [0, 1, 2, 3, 4], 2.0)
    return rng, spine, plans


@pytest.mark.parametrize("seed,severe", [(0, False), (1, True), (2, False)])
def test_spine_region_holds_everything_painted(monkeypatch, seed, severe):
    _, spine, plans = _study(seed, severe)
    points = [pixel_world(st, k, (st.rows, st.cols))
              for plan in plans for st in plan.stacks for k in range(0, len(st.positions), 2)]
    fast = [phantom.label_points(spine, p) for p in points]
    monkeypatch.setattr(phantom, "_spine_extent", lambda s: (1e9, -1e9, 1e9, 1e9, 1e9))
    for p, (tissue, tss) in zip(points, fast):
        full_tissue, full_tss = phantom.label_points(spine, p)
        np.testing.assert_array_equal(tissue, full_tissue)
        np.testing.assert_array_equal(tss, full_tss)


def test_plane_texture_and_bias_match_pointwise():
    _, spine, plans = _study(3)
    for plan in plans:
        st = plan.stacks[0]
        shape = (st.rows // 2, st.cols // 3)
        origin, step_r, step_c = render_grid(st, 1, shape)
        pts = pixel_world(st, 1, shape)
        np.testing.assert_allclose(plane_texture(origin, step_r, step_c, shape, spine.waves),
                                   texture(pts, spine.waves), atol=1e-4)
        coil = spine.to_world(0.0, spine.body_t[5], spine.back_depth + 40)
        np.testing.assert_allclose(plane_bias_field(origin, step_r, step_c, shape, coil, 150.0),
                                   bias_field(pts, coil, 150.0), atol=1e-5)


@pytest.mark.parametrize("sequence,rescale", [("T2", False), ("STIR", True)])
def test_dicom_bytes_are_pydicoms(tmp_path, sequence, rescale):
    rng, _, plans = _study(4)
    plan = plans[0]
    plan.sequence = sequence
    number_instances(rng, plan)
    pixels = [rng.integers(0, 4000, (len(st.positions), st.rows, st.cols)).astype(np.uint16)
              for st in plan.stacks]
    write_series(tmp_path, plan, pixels, 12345, 0, 3, rescale=rescale)
    files = sorted(tmp_path.glob("*.dcm"))
    assert len(files) == len(plan.stacks[0].positions)
    for path in files[:3]:
        raw = path.read_bytes()
        ds = pydicom.dcmread(path)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        k = list(plan.stacks[0].instances).index(int(ds.InstanceNumber))
        np.testing.assert_array_equal(ds.pixel_array, pixels[0][k])
        again = tmp_path / "again.dcm"
        ds.save_as(again, enforce_file_format=True)
        assert again.read_bytes() == raw
