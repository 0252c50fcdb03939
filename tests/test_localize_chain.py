"""The points stage's level chain: a level finder (TotalSpineSeg in production) first, the
learned localiser where it is absent, fails, raises or is doubtful (fast, CPU).

The level source is the synthetic generator's TotalSpineSeg-format label maps, parsed by the
real parser: directly (a finder that reads the map of the volume's series), and through the
production finder (``run_totalspineseg`` via ``tss_level_finder`` and the CLI's ``--tss``) with
a stand-in ``totalspineseg`` program that writes those maps where the real one would. The
learned models are untrained tiny networks: what is checked is where each row comes from, not
how good the learned rows are.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rsna_lumbar.cli import main
from rsna_lumbar.dicom.placement import competition_to_world
from rsna_lumbar.localize import (
    Flag, LabelMap, LevelPoints, TotalSpineSeg, points_from_labels, tss_level_finder,
)
from rsna_lumbar.localize.keypoints.dataset import TASKS
from rsna_lumbar.localize.keypoints.model import HeatmapNet, load_models, save_models
from rsna_lumbar.points import LOCALISED_COLUMNS
from rsna_lumbar.localize.stage import (
    LevelSourceLog, predict_split, predict_study,
)
from rsna_lumbar.localize.keypoints.train import study_stacks
from rsna_lumbar.vocabulary import LEVELS, Condition, SeriesDescription

SCS = Condition.SPINAL_CANAL_STENOSIS.title
STAND_IN = """#!/bin/sh
# stand-in for 'totalspineseg INPUT OUTPUT ...': writes the generator's step-1 map of INPUT
mkdir -p "$2/step1_output" && cp "{truth}/step1_output/$(basename "$1")" "$2/step1_output/"
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from rsna_lumbar.synth.generate import generate

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("chain")
    data = generate(root / "data", studies=1, seed=1, test_studies=1, workers=1, scale=4,
                    progress=False)  # fmt: skip
    torch.manual_seed(0)
    config = {"backbone": "lcnet_050", "width": 16,
              "tasks": {t: task.as_config() for t, task in TASKS.items()}}  # fmt: skip
    nets = {t: [HeatmapNet("lcnet_050", 3, task.n_points, width=16).eval()]
            for t, task in TASKS.items()}  # fmt: skip
    model_dir = save_models(root / "localizer", config, nets)
    stacks = study_stacks(data, "train", root / "work", 1)
    study = next(iter(stacks))[0]
    own = [s for (st, _), series_stacks in stacks.items() if st == study for s in series_stacks]
    return {"data": data, "root": root, "model_dir": model_dir, "models": load_models(model_dir)[1],
            "study": study, "stacks": own,
            "series": pd.read_csv(data / "truth" / "series_train.csv").set_index("series_id"),
            "truth": pd.read_csv(data / "truth" / "points.csv")}  # fmt: skip


def _truth_finder(data: Path):
    """``volume -> LevelPoints`` from the generator's step-2 map of the volume's series."""

    def find(volume) -> LevelPoints:
        name = f"{volume.study_id}_{volume.series_id}.nii.gz"
        found = points_from_labels(LabelMap.load(data / "truth/totalspineseg/step2_output" / name))
        return found.with_provenance(volume.study_id, volume.series_id)

    return find


def _predict(chain, levels=None, log=None) -> pd.DataFrame:
    with torch.no_grad():
        rows = predict_study(chain["models"], chain["stacks"], chain["data"], levels, log)
    return pd.DataFrame(rows, columns=list(LOCALISED_COLUMNS))


def _truth(chain, structure: str) -> np.ndarray:
    t = chain["truth"]
    rows = t[(t.study_id == chain["study"]) & (t.structure == structure)].set_index("level")
    return rows.loc[[lv.title for lv in LEVELS], ["world_x", "world_y", "world_z"]].to_numpy()


def _world(frame: pd.DataFrame) -> np.ndarray:
    return frame[["world_x", "world_y", "world_z"]].to_numpy(float)


def test_ok_levels_give_the_canal_and_foraminal_rows(chain):
    table = _predict(chain, _truth_finder(chain["data"]))
    description = chain["series"].series_description
    by_id = {(s.series_id, s.stack_index): s for s in chain["stacks"]}
    t1, t2 = SeriesDescription.SAGITTAL_T1, SeriesDescription.SAGITTAL_T2
    left = Condition.LEFT_NEURAL_FORAMINAL_NARROWING.title
    right = Condition.RIGHT_NEURAL_FORAMINAL_NARROWING.title
    for condition, structure, kind, tolerance in ((SCS, "canal", t2, 5.0),
                                                  (left, "left_foramen", t1, 8.0),
                                                  (right, "right_foramen", t1, 8.0)):
        rows = table[table.condition == condition]
        assert rows.level.tolist() == [lv.title for lv in LEVELS], condition
        assert (rows.source == "totalspineseg").all() and rows.confidence.eq(1.0).all()
        assert (description.loc[rows.series_id] == kind.value).all(), condition
        error = np.linalg.norm(_world(rows) - _truth(chain, structure), axis=1)
        assert error.max() < tolerance, (condition, error.round(1))
        for row in rows.itertuples():  # (instance, x, y) is the point's slice and projection
            stacks = [s for k, s in by_id.items() if k[0] == row.series_id]
            slice_point = competition_to_world(stacks, row.instance_number, row.x, row.y)
            assert np.linalg.norm(slice_point - [row.world_x, row.world_y, row.world_z]) < 3.0
    subarticular = table[table.condition.str.contains("Subarticular")]
    assert len(subarticular) == 10 and (subarticular.source == "learned").all()


def _sagittal_rows(table: pd.DataFrame) -> int:
    return int((~table.condition.str.contains("Subarticular")).sum())


def _doubtful(data):
    find = _truth_finder(data)
    return lambda volume: replace(find(volume), flags=(Flag.OFF_BY_ONE,))


def _failed(volume) -> LevelPoints:
    return LevelPoints.empty("none", reason="TotalSpineSeg failed: no landmark disc")


def _raises(volume) -> LevelPoints:
    raise RuntimeError("the level finder broke")


@pytest.mark.parametrize("finder, reason", [("doubtful", "doubtful (off_by_one)"),
                                            ("failed", "doubtful (failed)"),
                                            ("raises", "raised RuntimeError")])  # fmt: skip
def test_doubtful_failed_or_raising_finders_leave_the_learned_rows(chain, finder, reason, caplog):
    levels = {"doubtful": _doubtful(chain["data"]), "failed": _failed, "raises": _raises}[finder]
    learned = _predict(chain)
    # 5 canal + 10 foramen rows always; the untrained test models' subarticular rows depend on
    # whether their canal points register to an axial slice, so they are not counted here
    assert _sagittal_rows(learned) == 15 and (learned.source == "learned").all()
    log = LevelSourceLog()
    with caplog.at_level(logging.WARNING, logger="rsna_lumbar.localize.stage"):
        for _ in range(2):  # the same reason twice: logged once, counted twice
            pd.testing.assert_frame_equal(_predict(chain, levels, log), learned)
    assert len([r for r in caplog.records if reason in r.message]) == 1
    assert log.summary().startswith("level finder used for 0 of 2 studies; learned: 2 × ")


def _stand_in(root: Path, data: Path, exit_code: int = 0) -> tuple[Path, Path]:
    """A ``totalspineseg`` script (writes the truth map, or fails) and a weights folder."""
    script = root / f"totalspineseg-{exit_code}"
    body = STAND_IN.format(truth=data / "truth" / "totalspineseg")
    fails = f"#!/bin/sh\necho 'no landmark' >&2\nexit {exit_code}\n"
    script.write_text(body if exit_code == 0 else fails)
    script.chmod(0o755)
    weights = root / "tss-weights"
    for dataset in ("Dataset101_TotalSpineSeg_step1", "Dataset102_TotalSpineSeg_step2"):
        (weights / "nnUNet" / "results" / dataset / "T__P__3d_fullres" / "fold_0").mkdir(
            parents=True, exist_ok=True)
    return script, weights


@pytest.mark.parametrize("exit_code", [0, 1])
def test_production_finder_runs_the_program_and_never_drops_a_study(chain, tmp_path, exit_code):
    script, weights = _stand_in(tmp_path, chain["data"], exit_code)
    tss = TotalSpineSeg.from_env(executable=script, data_dir=weights)
    levels = tss_level_finder(tss, tmp_path / "cache")
    with torch.no_grad():
        table = predict_split(chain["data"], "train", tmp_path / "points.csv", chain["model_dir"],
                              work=chain["root"] / "work", workers=1, levels=levels)  # fmt: skip
    assert table.study_id.unique().tolist() == [chain["study"]] and _sagittal_rows(table) == 15
    sagittal = table[~table.condition.str.contains("Subarticular")]
    assert set(sagittal.source) == {"totalspineseg" if exit_code == 0 else "learned"}
    assert list(tmp_path.glob(f"cache/{chain['study']}/*/tss.log"))  # it really ran


def test_cli_tss_choices(chain, tmp_path, monkeypatch, capsys):
    data, model = chain["data"], str(chain["model_dir"])
    common = ["localize", "--data", str(data), "--split", "test", "--model", model, "--work",
              str(chain["root"] / "work"), "--workers", "1", "--threads", "1"]  # fmt: skip
    monkeypatch.setenv("RSNA_TSS_BIN", str(tmp_path / "nope"))
    monkeypatch.delenv("TOTALSPINESEG_DATA", raising=False)
    assert main([*common, "--out", str(tmp_path / "x.csv"), "--tss", "on"]) == 1
    assert "--tss on, but TotalSpineSeg is unavailable" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "auto-absent.csv")]) == 0
    assert set(pd.read_csv(tmp_path / "auto-absent.csv").source) == {"learned"}
    # --device: the CPU named explicitly gives the same rows as auto on this GPU-less machine
    if not torch.cuda.is_available():
        assert main([*common, "--out", str(tmp_path / "cpu.csv"), "--device", "cpu"]) == 0
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cpu.csv"),
                                      pd.read_csv(tmp_path / "auto-absent.csv"))  # fmt: skip
        assert main([*common, "--out", str(tmp_path / "gpu.csv"), "--device", "cuda"]) == 1
        assert "no GPU is visible" in capsys.readouterr().err
    script, weights = _stand_in(tmp_path, data)
    monkeypatch.setenv("RSNA_TSS_BIN", str(script))
    monkeypatch.setenv("TOTALSPINESEG_DATA", str(weights))
    for mode, sources in (("auto", {"totalspineseg", "learned"}), ("off", {"learned"})):
        out = tmp_path / f"{mode}.csv"
        assert main([*common, "--out", str(out), "--tss", mode]) == 0
        table = pd.read_csv(out)
        assert set(table.source) == sources and table.study_id.nunique() == 1, mode


def test_axial_slices_of_one_stack_are_scored_in_one_batch_as_one_at_a_time(chain, monkeypatch):
    """The subarticular rows score every slice the canal points land on in one axial stack in
    one batch; scored one slice at a time they are the same points (to 1e-5 mm)."""
    from rsna_lumbar.localize.keypoints import predict as P

    batched = _predict(chain, _truth_finder(chain["data"]))
    real, sizes = P.slice_heatmaps, []

    def one_at_a_time(models, volume, task, slices=None, batch=16, mirror=True):
        sizes.append(len(slices))
        parts = [real(models, volume, task, [k], batch, mirror) for k in slices]
        return tuple(np.concatenate(part) for part in zip(*parts))

    monkeypatch.setattr(P, "slice_heatmaps", one_at_a_time)
    single = _predict(chain, _truth_finder(chain["data"]))
    assert max(sizes) > 1  # some stack held several levels' slices: they went in one batch
    sub = batched.condition.str.contains("Subarticular")
    assert sub.sum() == 10 and single.condition.tolist() == batched.condition.tolist()
    np.testing.assert_allclose(_world(single[sub]), _world(batched[sub]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(single.confidence, batched.confidence, rtol=0, atol=1e-4)
    pd.testing.assert_frame_equal(single[~sub], batched[~sub])


def test_foramina_are_sought_in_their_canal_points_territory(chain, monkeypatch):
    """Each left-foramen heatmap peaks brighter at the *next* level's foramen than at its own:
    on its own the sagittal T1 decode takes the wrong level; given the canal points, each level
    is sought only in the part of the plane nearest its canal point and the right one is kept."""
    from rsna_lumbar.dicom.reader import read_stack
    from rsna_lumbar.localize.keypoints import predict as P

    t1 = next(s for s in chain["stacks"] if chain["series"].series_description.loc[s.series_id]
              == SeriesDescription.SAGITTAL_T1.value)  # fmt: skip
    volume = read_stack(t1, chain["data"])
    models = chain["models"]["sag_t1"]
    prob, to_vox, slices = P.slice_probabilities(models, volume, P.task_of(models, "sag_t1"))
    stride, h = models[0].stride, prob.shape[-1]
    from_vox = np.linalg.inv(np.r_[to_vox, [[0.0, 0.0, 1.0]]])[:2]
    designed = torch.zeros_like(prob)
    truth = _truth(chain, "left_foramen")

    def light(level: int, world: np.ndarray, value: float) -> None:
        col, row, k = volume.world_to_voxel(world[None])[0]
        u, v = from_vox @ [col, row, 1.0]
        designed[int(np.flatnonzero(slices == round(k))[0]), level,
                 min(int(v // stride), h - 1), min(int(u // stride), h - 1)] = value  # fmt: skip

    for level in range(5):
        light(level, truth[level], 0.5)
        light(level, truth[level + 1 if level < 4 else 3], 0.9)  # a brighter wrong-level peak
    monkeypatch.setattr(P, "slice_probabilities", lambda *a, **k: (designed, to_vox, slices))
    canal = [{"level": lv.title, "world_x": x, "world_y": y, "world_z": z}
             for lv, (x, y, z) in zip(LEVELS, _truth(chain, "canal"))]  # fmt: skip
    left = Condition.LEFT_NEURAL_FORAMINAL_NARROWING.title
    for given, expected in ((canal, [0, 1, 2, 3, 4]), (None, [1, 2, 3, 4, 3])):
        rows = pd.DataFrame(P.foramen_points(models, volume, given))
        rows = rows[rows.condition == left]
        assert rows.level.tolist() == [lv.title for lv in LEVELS]
        distance = np.linalg.norm(_world(rows)[:, None] - truth[None], axis=2)  # (row, level)
        assert distance.argmin(axis=1).tolist() == expected, distance.round(1)
        assert distance.min(axis=1).max() < 8.0  # within a cell or two of the lit one


def test_the_axial_model_chooses_the_recess_slice_among_the_registered_ones_neighbours(chain, monkeypatch):
    """Where the axial heatmaps say the recesses are on the slice after the one the canal point
    registers to, that slice is taken (``axial_reach`` 1); with ``axial_reach`` 0 the registered
    slice is kept whatever the maps say."""
    from rsna_lumbar.dicom.reader import read_stack
    from rsna_lumbar.localize.keypoints import predict as P

    models = chain["models"]["axial"]
    axial = [s for s in chain["stacks"] if chain["series"].series_description.loc[s.series_id]
             == SeriesDescription.AXIAL_T2.value]  # fmt: skip
    canal = [{"level": lv.title, "world_x": x, "world_y": y, "world_z": z}
             for lv, (x, y, z) in zip(LEVELS, _truth(chain, "canal"))]  # fmt: skip
    volumes: dict = {}

    def read(stack):
        key = (stack.series_id, stack.stack_index)
        return volumes.setdefault(key, read_stack(stack, chain["data"]))

    def decode(reach: int) -> pd.DataFrame:
        rows = P.subarticular_points(models, canal, axial, read, P.Decoding(axial_reach=reach))
        return pd.DataFrame(rows).set_index(["condition", "level"])

    registered = decode(0)
    lit, expected = set(), {}  # (volume, slice) the maps light; each row's instance after it
    for key, row in registered.iterrows():
        volume = next(v for v in volumes.values() if v.series_id == row.series_id
                      and row.instance_number in v.instance_numbers)  # fmt: skip
        k = int(volume.slice_of(int(row.instance_number))) + 1
        if k < volume.shape[0]:
            lit.add((id(volume), k))
            expected[key] = int(volume.instance_of(k))
    assert expected  # some registered slice has a next one

    real = P.slice_heatmaps

    def maps(models, volume, task, slices=None, batch=16, mirror=True):
        vox, _, slices = real(models, volume, task, slices, batch, mirror)
        score = np.array([[0.99, 0.99] if (id(volume), k) in lit else [0.05, 0.05] for k in slices])
        return vox, score, slices

    monkeypatch.setattr(P, "slice_heatmaps", maps)
    kept, chosen = decode(0), decode(1)
    assert kept.instance_number.tolist() == registered.instance_number.tolist()
    assert len(chosen) == len(registered) == 10
    for key, instance in expected.items():
        assert int(chosen.loc[key, "instance_number"]) == instance, key
