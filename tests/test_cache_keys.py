"""Nothing reused by mistake: each cache is keyed on what it was made from (fast, CPU).

Two synthetic competition folders A and B (other seeds, other studies) share one work folder,
as a new user running the same commands on two folders would: B's index, points and crops are
B's, never A's; a changed points file or a changed split recomputes; a study whose crops failed
is cut again; a command that produced no row for the studies it was given fails.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from rsna_lumbar.cli import main
from rsna_lumbar.crops import stage
from rsna_lumbar.crops.stage import build_crops
from rsna_lumbar.dicom import index as index_module
from rsna_lumbar.dicom.index import read_index, write_index
from rsna_lumbar.tables import split_study_ids


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """``{"A", "B"}``: two synthetic folders (A: 2 train + 2 test studies, B: 1 + 2) and
    ``"model"``, an untrained tiny localiser (what is checked is whose rows, not how good)."""
    from rsna_lumbar.localize.keypoints.dataset import TASKS
    from rsna_lumbar.localize.keypoints.model import HeatmapNet, save_models
    from rsna_lumbar.synth.generate import generate

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("two_folders")
    made = {name: generate(root / name, studies=studies, seed=seed, test_studies=2, workers=1,
                           scale=4, progress=False)
            for name, studies, seed in (("A", 2, 1), ("B", 1, 2))}  # fmt: skip
    torch.manual_seed(0)
    config = {"backbone": "lcnet_050", "width": 16,
              "tasks": {t: task.as_config() for t, task in TASKS.items()}}  # fmt: skip
    nets = {t: [HeatmapNet("lcnet_050", 3, task.n_points, width=16).eval()]
            for t, task in TASKS.items()}  # fmt: skip
    made["model"] = save_models(root / "localizer", config, nets)
    return made


def _studies(data, split):
    return set(split_study_ids(data, split))


def _index_studies(path):
    return set(read_index(path).study_id)


def test_index_is_rebuilt_for_another_folder_or_changed_files_never_reused(folders, tmp_path,
                                                                            caplog, monkeypatch):
    work = tmp_path / "work"
    a, b = folders["A"], folders["B"]
    assert _index_studies(write_index(a, "test", work, workers=1)) == _studies(a, "test")
    with caplog.at_level(logging.WARNING):
        table = write_index(b, "test", work, workers=1)
    assert _index_studies(table) == _studies(b, "test")
    assert "another data folder" in caplog.text and str(a.resolve()) in caplog.text

    copy = shutil.copytree(b, tmp_path / "copy")
    write_index(copy, "test", work, workers=1)
    stamp = table.stat().st_mtime_ns
    (copy / "train.csv").write_text((copy / "train.csv").read_text() + "\n")  # other split
    assert write_index(copy, "test", work) == table and table.stat().st_mtime_ns == stamp
    gone = next((copy / "test_images").iterdir())  # a study deleted in place
    shutil.rmtree(gone)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        write_index(copy, "test", work, workers=1)
    assert "other files" in caplog.text
    assert _index_studies(table) == _studies(b, "test") - {int(gone.name)}
    monkeypatch.setattr(index_module, "INDEX_SCHEMA", index_module.INDEX_SCHEMA + 1)
    stamp = table.stat().st_mtime_ns
    write_index(copy, "test", work, workers=1)
    assert table.stat().st_mtime_ns != stamp  # an older schema: rebuilt
    table.with_suffix(".key.json").unlink()  # an index from a kit that kept no key
    stamp = table.stat().st_mtime_ns
    write_index(copy, "test", work, workers=1)
    assert table.stat().st_mtime_ns != stamp


def test_localize_a_then_b_in_one_work_folder_gives_b_rows(folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the user's folder: ./work by default
    for name in ("A", "B"):
        assert main(["localize", "--data", str(folders[name]), "--split", "test", "--out",
                     f"{name}.csv", "--model", str(folders["model"]), "--tss", "off",
                     "--workers", "1"]) == 0  # fmt: skip
        assert set(pd.read_csv(f"{name}.csv").study_id) == _studies(folders[name], "test")


def test_localize_and_crops_fail_when_no_row_is_made_for_the_split(folders, tmp_path, capsys):
    b = folders["B"]
    empty = tmp_path / "no_images"  # the split lists two studies, none of them is on disk
    (empty / "test_images").mkdir(parents=True)
    shutil.copy(b / "test_series_descriptions.csv", empty)
    work = str(tmp_path / "work")
    assert main(["localize", "--data", str(empty), "--split", "test", "--out",
                 str(tmp_path / "none.csv"), "--model", str(folders["model"]), "--work", work,
                 "--tss", "off", "--workers", "1"]) == 1  # fmt: skip
    assert f"0 rows for 2 studies of {empty}" in capsys.readouterr().err
    # crops of B's test studies at A's label points: no point falls on B's series
    assert main(["crops", "--data", str(b), "--split", "test", "--points",
                 str(folders["A"] / "train_label_coordinates.csv"), "--out",
                 str(tmp_path / "crops"), "--work", work, "--workers", "1",
                 "--montages", "0"]) == 1  # fmt: skip
    assert f"0 crops for 2 studies of {b}" in capsys.readouterr().err


def _views(index_csv) -> pd.Series:
    index = pd.read_csv(index_csv, keep_default_na=False)
    return index.groupby("study_id").views.apply(lambda v: (v != "").sum())


def _cut(data, out, work, **kwargs):
    return build_crops(data, "train", out, work=work, workers=1, progress=False, montages=0,
                       **kwargs)


def test_crops_a_then_b_in_one_work_folder_are_b_crops(folders, tmp_path):
    work, out = tmp_path / "work", tmp_path / "crops"
    for name in ("A", "B"):
        views = _views(_cut(folders[name], out, work))
        assert set(views.index) == _studies(folders[name], "train") and (views > 0).all()


def test_changed_points_recut_their_study_only(folders, tmp_path):
    a, work, out = folders["A"], tmp_path / "work", tmp_path / "crops"
    points = tmp_path / "points.csv"
    shutil.copy(a / "train_label_coordinates.csv", points)
    _cut(a, out, work, points=points)
    moved, kept = sorted(_studies(a, "train"))
    stamps = {s: (out / f"{s}.npz").stat().st_mtime_ns for s in (moved, kept)}
    before = json.loads((out / f"{moved}.json").read_text())
    table = pd.read_csv(points)
    table.loc[table.study_id == moved, "x"] += 4.0
    table.to_csv(points, index=False)
    _cut(a, out, work, points=points)
    after = json.loads((out / f"{moved}.json").read_text())
    assert after["made_from"]["points"] != before["made_from"]["points"]
    assert (out / f"{moved}.npz").stat().st_mtime_ns != stamps[moved]
    assert (out / f"{kept}.npz").stat().st_mtime_ns == stamps[kept]


def test_a_study_whose_crops_failed_is_cut_again(folders, tmp_path, monkeypatch):
    a, work, out = folders["A"], tmp_path / "work", tmp_path / "crops"
    broken, fine = sorted(_studies(a, "train"))
    cut = stage.crop_study

    def crop_study(data, study_id, index_rows, points, read, geometry):
        if study_id == broken:
            raise MemoryError("killed while decoding")
        return cut(data, study_id, index_rows, points, read, geometry)

    monkeypatch.setattr(stage, "crop_study", crop_study)  # workers=1: runs in this process
    assert _views(_cut(a, out, work))[broken] == 0
    assert "study failed: MemoryError" in (out / f"{broken}.json").read_text()
    stamp = (out / f"{fine}.npz").stat().st_mtime_ns
    monkeypatch.setattr(stage, "crop_study", cut)
    assert _views(_cut(a, out, work))[broken] > 0
    assert (out / f"{fine}.npz").stat().st_mtime_ns == stamp


def test_localiser_resume_key_follows_the_training_data(folders, tmp_path):
    """Already so before the cache keys: a model of the resume folder is named by a digest of
    its training samples (studies, series, shapes, label points), so B never loads A's."""
    from rsna_lumbar.localize.keypoints.config import TrainConfig
    from rsna_lumbar.localize.keypoints.dataset import TASKS
    from rsna_lumbar.localize.keypoints.train import FitJob, job_key, load_samples, study_stacks
    from rsna_lumbar.tables import read_label_coordinates

    job = FitJob(0, frozenset(), "sag_t2", TrainConfig(backbone="lcnet_050", width=16, steps=3))
    keys = set()
    for name in ("A", "B"):
        data = folders[name]
        coords = read_label_coordinates(data / "train_label_coordinates.csv")
        samples = {"sag_t2": load_samples(data, TASKS["sag_t2"], coords,
                                          study_stacks(data, "train", tmp_path / "work", 1))}
        keys.add(job_key(job, samples, {}))
    assert len(keys) == 2


def test_crop_geometry_sizes_the_patches_and_a_changed_geometry_recuts(folders, tmp_path):
    from rsna_lumbar.crops.recipes import DEFAULT_GEOMETRY, geometry_from_settings
    from rsna_lumbar.crops.stage import read_geometry

    a, work, out = folders["A"], tmp_path / "work", tmp_path / "crops"
    assert read_geometry(out) == DEFAULT_GEOMETRY  # a cache without geometry.json: the default
    _cut(a, out, work)
    study = min(_studies(a, "train"))
    with np.load(out / f"{study}.npz") as npz:
        assert npz["spinal_canal_stenosis/l4_l5/sag_t2"].shape == (5, 64, 64)
        assert npz["spinal_canal_stenosis/l4_l5/axial"].shape == (3, 64, 64)
        default_sag = npz["spinal_canal_stenosis/l4_l5/sag_t2"]
    wide = geometry_from_settings({"spinal": {"sag_t2": {"px": 96, "slices": 7}},
                                   "foraminal": {"sag_t1": {"mm": 60}}})  # fmt: skip
    _cut(a, out, work, geometry=wide)
    assert read_geometry(out) == wide
    with np.load(out / f"{study}.npz") as npz:
        sag = npz["spinal_canal_stenosis/l4_l5/sag_t2"]
        assert sag.shape == (7, 96, 96)
        assert npz["spinal_canal_stenosis/l4_l5/axial"].shape == (3, 64, 64)  # not overridden
        assert npz["left_neural_foraminal_narrowing/l4_l5/sag_t1"].shape == (5, 64, 64)
    # the middle slices are the same anatomy at another resolution
    np.testing.assert_allclose(sag[2:5, ::3, ::3].mean(), default_sag[1:4, ::2, ::2].mean(), atol=0.1)
    made = json.loads((out / f"{study}.json").read_text())["made_from"]["settings"]
    assert made == stage.settings_key(wide) != stage.settings_key(DEFAULT_GEOMETRY)
    with pytest.raises(KeyError, match="its views"):
        geometry_from_settings({"spinal": {"sag_t1": {"px": 96}}})
