"""``rsna-lumbar synth`` end to end on a tiny set: layout, spellings, geometry, label points."""

import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from rsna_lumbar.dicom.reader import load_series
from rsna_lumbar.geometry.affine import lps_to_ras_affine, plane_normal, world_to_voxel
from rsna_lumbar.synth.generate import generate
from rsna_lumbar.vocabulary import (
    CONDITIONS, LEVELS, SUBMISSION_COLUMNS, TARGET_COLUMNS, Condition, Level, SeriesDescription,
)

SCALE = 3.0  # ~2 mm pixels: small matrices, fast


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, studies=2, seed=3, test_studies=1, workers=2, scale=SCALE)
    return out


def _volumes(data, split, study, series):
    return load_series(data / f"{split}_images" / str(study) / str(series))


def test_layout_and_spellings(data):
    train = pd.read_csv(data / "train.csv")
    assert list(train.columns) == ["study_id", *TARGET_COLUMNS]
    assert set(train.stack().iloc[1::1].dropna()) - set(train.study_id) <= {
        "Normal/Mild", "Moderate", "Severe"}
    coords = pd.read_csv(data / "train_label_coordinates.csv")
    assert list(coords.columns) == ["study_id", "series_id", "instance_number", "condition",
                                    "level", "x", "y"]
    assert set(coords.condition) <= {c.title for c in CONDITIONS}
    assert set(coords.level) <= {lv.title for lv in LEVELS}
    sub = pd.read_csv(data / "sample_submission.csv")
    assert tuple(sub.columns) == SUBMISSION_COLUMNS
    test_desc = pd.read_csv(data / "test_series_descriptions.csv")
    assert len(sub) == 25 * test_desc.study_id.nunique()
    for split in ("train", "test"):
        desc = pd.read_csv(data / f"{split}_series_descriptions.csv")
        assert set(desc.series_description) <= {d.value for d in SeriesDescription}
        for row in desc.itertuples():
            folder = data / f"{split}_images" / str(row.study_id) / str(row.series_id)
            assert sorted(folder.glob("*.dcm")), folder
    manifest = json.loads((data / "truth" / "manifest.json").read_text())
    assert manifest["counts"]["train"] == 2 and manifest["counts"]["test"] == 1


def test_coordinates_exactly_for_labelled_cells_on_the_right_series(data):
    train = pd.read_csv(data / "train.csv").set_index("study_id")
    coords = pd.read_csv(data / "train_label_coordinates.csv")
    desc = pd.read_csv(data / "train_series_descriptions.csv").set_index("series_id")
    for row in coords.itertuples():
        condition, level = Condition.from_title(row.condition), Level.from_title(row.level)
        assert desc.loc[row.series_id, "series_description"] == condition.annotated_on.value
        assert isinstance(train.loc[row.study_id, f"{condition.value}_{level.value}"], str)
    labelled = int(train.notna().sum().sum())
    assert labelled == len(coords)


def _truth(data):
    return pd.read_csv(data / "truth" / "points.csv")


def _point(truth, study, level, structure):
    row = truth[(truth.study_id == study) & (truth.level == level) & (truth.structure == structure)]
    return row[["world_x", "world_y", "world_z"]].to_numpy()[0]


def test_every_series_loads_and_label_points_land_on_their_structure(data):
    coords = pd.read_csv(data / "train_label_coordinates.csv")
    truth = _truth(data)
    kind = {"Spinal": "canal", "Left Neural": "left_foramen", "Right Neural": "right_foramen",
            "Left Subarticular": "left_recess", "Right Subarticular": "right_recess"}
    desc = pd.read_csv(data / "train_series_descriptions.csv")
    volumes = {r.series_id: _volumes(data, "train", r.study_id, r.series_id) for r in desc.itertuples()}
    assert all(volumes.values())
    for row in coords.itertuples():
        structure = next(v for k, v in kind.items() if row.condition.startswith(k))
        world = _point(truth, row.study_id, row.level, structure)
        vol = next(v for v in volumes[row.series_id] if row.instance_number in v.instance_numbers)
        k = int(np.nonzero(vol.instance_numbers == row.instance_number)[0][0])
        col, r, s = world_to_voxel(vol.affine, world)
        spacing = np.linalg.norm(vol.affine[:3, 2]) if vol.pixels.shape[0] > 1 else 4.0
        pixel = np.linalg.norm(vol.affine[:3, 0])
        assert abs(col - row.x) < 0.05 and abs(r - row.y) < 0.05  # pixel from the headers
        assert abs(s - k) * spacing <= spacing / 2 + 0.6  # the named slice holds the point
        # the structure is bright fluid/fat on its series (CSF on T2, foraminal fat on T1)
        if structure in ("canal", "left_foramen", "right_foramen"):
            grade = pd.read_csv(data / "train.csv").set_index("study_id").loc[
                row.study_id, Condition.from_title(row.condition).value + "_" +
                Level.from_title(row.level).value]
            if grade == "Normal/Mild":
                img = vol.pixels[k]
                y0, x0 = int(round(row.y)), int(round(row.x))
                patch = img[max(y0 - 1, 0) : y0 + 2, max(x0 - 1, 0) : x0 + 2]
                assert patch.max() > np.percentile(img, 75), (row, pixel)


def test_sides_and_axial_planes(data):
    truth = _truth(data)
    for study in truth[truth.split == "train"].study_id.unique():
        for level in LEVELS:
            centre = _point(truth, study, level.title, "disc_centre")
            left = _point(truth, study, level.title, "left_foramen")
            right = _point(truth, study, level.title, "right_foramen")
            assert left[0] > centre[0] + 8 > right[0] + 16  # LPS +x is the patient's left
    coords = pd.read_csv(data / "train_label_coordinates.csv")
    sub = coords[coords.condition.str.contains("Subarticular")]
    for row in sub.itertuples():
        disc = _point(truth, row.study_id, row.level, "disc_centre")
        vols = _volumes(data, "train", row.study_id, row.series_id)
        vol = next(v for v in vols if row.instance_number in v.instance_numbers)
        k = int(np.nonzero(vol.instance_numbers == row.instance_number)[0][0])
        voxel = world_to_voxel(vol.affine, disc)
        step = np.linalg.norm(vol.affine[:3, 2])
        assert abs(voxel[2] - k) * step < 7.0  # the labelled axial plane passes by the disc


def test_totalspineseg_truth_maps(data):
    series = pd.read_csv(data / "truth" / "series_train.csv")
    truth = _truth(data)
    sag = series[series.tss_file.notna() & (series.tss_file != "")]
    assert len(sag) == 2 * 2
    for row in sag.itertuples():
        step2 = nib.load(data / "truth" / "totalspineseg" / "step2_output" / row.tss_file)
        step1 = nib.load(data / "truth" / "totalspineseg" / "step1_output" / row.tss_file)
        labels2 = np.asarray(step2.dataobj)
        labels1 = np.asarray(step1.dataobj)
        assert labels2.dtype == np.uint8
        assert {2, 41, 42, 43, 44, 45, 50, 92, 93, 94, 95, 100} <= set(np.unique(labels2))
        assert not set(np.unique(labels1)) & {41, 42, 43, 44, 45} and 50 in labels1
        vol = _volumes(data, "train", row.study_id, row.series_id)[0]
        assert np.allclose(step2.affine, lps_to_ras_affine(vol.affine), atol=1e-3)
        assert labels2.shape == vol.pixels.shape[::-1]
        for value, level in zip((92, 93, 94, 95, 100), LEVELS):
            ijk = np.argwhere(labels2 == value).mean(axis=0)
            world = vol.affine[:3, :3] @ ijk + vol.affine[:3, 3]
            centre = _point(truth, row.study_id, level.title, "disc_centre")
            assert np.linalg.norm((world - centre)[1:]) < 6.0  # in-plane; slices are 4 mm


def test_same_seed_same_bytes(tmp_path):
    def digest(root):
        h = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        return h.hexdigest()

    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, studies=1, seed=11, test_studies=1, workers=1, scale=4.0)
    generate(b, studies=1, seed=11, test_studies=1, workers=2, scale=4.0)
    assert digest(a) == digest(b)
