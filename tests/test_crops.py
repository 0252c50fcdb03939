"""Crops: oriented fixed-mm patches checked against a known world intensity field, and the stage."""

import json

import numpy as np
import pandas as pd
import pytest

from rsna_lumbar.crops.recipes import LEFT, POSTERIOR, SUPERIOR
from rsna_lumbar.crops.sampling import PatchSpec, extract_patch, intensity_scale
from rsna_lumbar.crops.stage import build_crops
from rsna_lumbar.dicom import load_series
from rsna_lumbar.vocabulary import TARGET_COLUMNS
from tests.dicom_factory import (
    AXIAL,
    SAGITTAL,
    SeriesSpec,
    StudySpec,
    parallel_positions,
    write_series,
    write_split,
)


def field(points):
    """A linear world intensity field: bilinear resampling reproduces it exactly in-plane."""
    p = np.asarray(points, dtype=float)
    return 2000 + 3 * p[..., 0] + 2 * p[..., 1] + 4 * p[..., 2]


def render(orientation, positions, rows, columns, spacing):
    """Pixels of a series sampling ``field`` — computed by hand from IPP/IOP, not by the kit."""
    iop = np.asarray(orientation, float)
    r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    out = []
    for ipp in positions:
        world = ipp + c[..., None] * spacing[1] * iop[:3] + r[..., None] * spacing[0] * iop[3:]
        out.append(np.rint(field(world)))
    return np.asarray(out).astype(np.uint16)


def sagittal_spec(spacing_px, reverse, n=9, size=96):
    iop = SAGITTAL  # normal = row × column = −x
    positions = parallel_positions((16.0, -40.0, 40.0), iop, n, 4.0)  # x = 16 … −16
    if reverse:  # the same slices written (and numbered) in the opposite order
        positions = positions[::-1]
    pixels = render(iop, positions, size, size, (spacing_px, spacing_px))
    return SeriesSpec(orientation=iop, positions=positions, rows=size, columns=size,
                      pixel_spacing=(spacing_px, spacing_px), pixels=pixels)


def expected_patch(center, spec, u, v, slice_offsets):
    """The field on the patch grid: slice s sits ``slice_offsets[s]`` mm along the normal."""
    offsets = (np.arange(spec.size_px) - (spec.size_px - 1) / 2) * spec.size_mm / spec.size_px
    grid = offsets[:, None, None] * v + offsets[None, :, None] * u
    return np.stack([field(center + d + grid) for d in slice_offsets])


def test_patch_matches_world_field_whatever_spacing_and_slice_order(tmp_path):
    center = np.array([0.0, -15.0, 20.0])  # lies on a slice (x = 0) of both series
    spec = PatchSpec(size_mm=20.0, size_px=16, n_slices=3)
    axes = (POSTERIOR, -SUPERIOR, LEFT)
    patches = []
    for name, spacing, reverse in (("a", 0.7, False), ("b", 0.5, True)):
        write_series(tmp_path / name, sagittal_spec(spacing, reverse))
        (volume,) = load_series(tmp_path / name)
        scale = intensity_scale(volume)
        patch, info = extract_patch(volume, center, spec, axes, normalisation=scale)
        assert info["inside"] and abs(info["distance_mm"]) < 1e-6
        raw = patch * scale[1] + scale[0]
        # Slice offsets along +x (toward LEFT = w): −4, 0, +4 mm.
        want = expected_patch(center, spec, POSTERIOR, -SUPERIOR, [np.array([d, 0, 0]) for d in (-4, 0, 4)])
        np.testing.assert_allclose(raw, want, atol=1.0)
        patches.append(raw)
    np.testing.assert_allclose(patches[0], patches[1], atol=1.5)


def test_mirroring_for_the_right_side(tmp_path):
    positions = parallel_positions((-40.0, -40.0, -6.0), AXIAL, 5, 3.0)
    pixels = render(AXIAL, positions, 80, 80, (1.0, 1.0))
    write_series(tmp_path / "ax", SeriesSpec(orientation=AXIAL, positions=positions, rows=80,
                                             columns=80, pixel_spacing=(1.0, 1.0), pixels=pixels))
    (volume,) = load_series(tmp_path / "ax")
    spec = PatchSpec(24.0, 24, 3)
    center = np.array([-10.0, -5.0, 0.0])
    left, _ = extract_patch(volume, center, spec, (LEFT, POSTERIOR, SUPERIOR))
    right, _ = extract_patch(volume, center, spec, (-LEFT, POSTERIOR, SUPERIOR))
    np.testing.assert_allclose(right, left[:, :, ::-1], atol=1e-4)
    # Columns of the left-oriented patch increase toward +x: the field grows along them.
    assert (np.diff(left[1], axis=1) > 0).all()
    assert (np.diff(left[:, 12, 12]) > 0).all()  # slices run superior


def make_study(root, study_id, broken=False):
    sag = sagittal_spec(0.8, reverse=True, n=9, size=96)
    positions = parallel_positions((-40.0, -45.0, 2.0), AXIAL, 6, 3.0)
    axial = SeriesSpec(orientation=AXIAL, positions=positions, rows=90, columns=90,
                       pixel_spacing=(0.9, 0.9), pixels=render(AXIAL, positions, 90, 90, (0.9, 0.9)))
    return StudySpec(study_id, {study_id * 10 + 1: ("Sagittal T2/STIR", sag),
                                study_id * 10 + 2: ("Sagittal T1", sag),
                                study_id * 10 + 3: ("Axial T2", axial)})


def test_crops_stage_writes_cache_and_resumes(tmp_path, caplog):
    root = tmp_path / "data"
    write_split(root, "train", [make_study(root, 1), make_study(root, 2)])
    # Points: spinal L3/L4 at instance 5 (x = 0 mm), left foramen, right subarticular.
    rows = []
    for study in (1, 2):
        rows += [(study, study * 10 + 1, 5, "Spinal Canal Stenosis", "L3/L4", 40.0, 30.0),
                 (study, study * 10 + 2, 3, "Left Neural Foraminal Narrowing", "L3/L4", 40.0, 30.0),
                 (study, study * 10 + 3, 3, "Right Subarticular Stenosis", "L3/L4", 45.0, 40.0),
                 (study, study * 10 + 3, 99, "Left Subarticular Stenosis", "L3/L4", 45.0, 40.0)]
    pd.DataFrame(rows, columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]).to_csv(
        root / "train_label_coordinates.csv", index=False)
    train = pd.DataFrame({"study_id": [1, 2], **{c: "Normal/Mild" for c in TARGET_COLUMNS}})
    train.loc[0, "spinal_canal_stenosis_l3_l4"] = "Severe"
    train.to_csv(root / "train.csv", index=False)
    # Study 2's axial series loses a file: the study must still be cut.
    (root / "train_images/2/23/1.dcm").write_bytes(b"not a dicom")

    out = tmp_path / "crops"
    index = pd.read_csv(build_crops(root, "train", out, work=tmp_path / "work", workers=1, progress=False),
                        keep_default_na=False)
    assert len(index) == 50
    row = index[(index.study_id == 1) & (index.condition == "spinal_canal_stenosis") & (index.level == "l3_l4")].iloc[0]
    assert row.label == 2 and row.views == "axial;sag_t2"
    arrays = np.load(out / "1.npz")
    assert arrays["spinal_canal_stenosis/l3_l4/sag_t2"].shape == (5, 64, 64)
    assert arrays["spinal_canal_stenosis/l3_l4/axial"].shape == (3, 64, 64)
    assert arrays["left_neural_foraminal_narrowing/l3_l4/sag_t1"].dtype == np.float16
    assert "right_subarticular_stenosis/l3_l4/axial" in arrays
    meta = json.loads((out / "1.json").read_text())
    assert any("instance 99" in issue for issue in meta["issues"])  # unusable point reported
    summary = [r.message for r in caplog.records if r.message.startswith("crops: ")]
    assert any("× point unusable" in m for m in summary)  # one line per kind, not per view
    view = meta["views"]["spinal_canal_stenosis/l3_l4/axial"]
    assert view["series_id"] == 13 and abs(view["distance_mm"]) <= 2.0
    assert (index[index.label >= 0].shape[0]) == 50
    assert (out / "1.png").read_bytes()[:4] == b"\x89PNG"  # the per-study montage

    before = (out / "1.npz").stat().st_mtime_ns
    (out / "2.json").unlink()
    build_crops(root, "train", out, work=tmp_path / "work", workers=1, progress=False)
    assert (out / "1.npz").stat().st_mtime_ns == before  # cached study skipped
    assert (out / "2.json").is_file()  # unfinished study recomputed


def test_mirror_axis_is_the_crops_left_right_axis_and_only_for_the_canal(tmp_path):
    from rsna_lumbar.crops.recipes import DEFAULT_GEOMETRY, mirror_axis, recipes_for
    from rsna_lumbar.vocabulary import Condition

    write_series(tmp_path / "sag", sagittal_spec(0.8, reverse=False))
    positions = parallel_positions((-40.0, -45.0, 2.0), AXIAL, 5, 3.0)
    write_series(tmp_path / "ax", SeriesSpec(orientation=AXIAL, positions=positions, rows=90,
                                             columns=90, pixel_spacing=(0.9, 0.9),
                                             pixels=render(AXIAL, positions, 90, 90, (0.9, 0.9))))  # fmt: skip
    volumes = {"sag_t2": load_series(tmp_path / "sag")[0], "axial": load_series(tmp_path / "ax")[0]}
    center = np.array([0.0, -12.0, 8.0])  # on a sagittal slice (x = 0) and an axial one (z = 8)
    for recipe in recipes_for(Condition.SPINAL_CANAL_STENOSIS):
        axis = mirror_axis("spinal", recipe.view)
        u, v, w = recipe.axes(None)
        flip = lambda d: -d if abs(d @ LEFT) > 0.99 else d  # noqa: E731 - the patient's mirror image
        crop, _ = extract_patch(volumes[recipe.view], center, recipe.spec, (u, v, w))
        mirrored, _ = extract_patch(volumes[recipe.view], center, recipe.spec, (flip(u), flip(v), flip(w)))
        np.testing.assert_allclose(mirrored, np.flip(crop, axis=axis), atol=1e-3)
        assert not np.allclose(crop, np.flip(crop, axis=axis), atol=1e-3)  # a real change
    assert mirror_axis("foraminal", "sag_t1") is None and mirror_axis("subarticular", "axial") is None
    assert set(DEFAULT_GEOMETRY) == {"spinal", "foraminal", "subarticular"}


def test_a_shifted_window_of_a_cut_with_context_shows_the_anatomy_beside_it(tmp_path):
    from rsna_lumbar.crops.sampling import window

    write_series(tmp_path / "sag", sagittal_spec(0.5, reverse=False))
    (volume,) = load_series(tmp_path / "sag")
    scale = intensity_scale(volume)
    view = PatchSpec(size_mm=16.0, size_px=16, n_slices=3, context_px=4, context_slices=1)
    axes = (POSTERIOR, -SUPERIOR, LEFT)
    center = np.array([0.0, -12.0, 30.0])
    cut, _ = extract_patch(volume, center, view.cut, axes, normalisation=scale)
    assert cut.shape == (5, 24, 24)
    np.testing.assert_allclose(window(cut, view), extract_patch(volume, center, view, axes,
                                                                normalisation=scale)[0], atol=1e-4)  # fmt: skip
    # 3 px posterior (+u), 2 px superior (−v) and one slice to the left: the crop of the moved
    # point, new anatomy on its edges, not the unshifted crop's reflected or repeated edge
    moved = center + 3 * view.pixel_mm * POSTERIOR + 2 * view.pixel_mm * SUPERIOR + 4.0 * LEFT
    want = extract_patch(volume, moved, view, axes, normalisation=scale)[0]
    shifted = window(cut, view, shift_px=(3, -2), shift_slices=1)
    np.testing.assert_allclose(shifted, want, atol=1e-3)
    assert not np.allclose(shifted, window(cut, view), atol=1e-3)
    np.testing.assert_allclose(window(cut, view, (99, -99), 9), window(cut, view, (4, -4), 1))  # clipped
    with pytest.raises(ValueError, match="not a cut"):
        window(cut[:, :20], view)
