"""Learned localiser, fast tests: grid geometry round trips (mirrored too), heatmap decoding,
the cranial-to-caudal chain decoder, model folder, real-exam wrapping, their canal training
points and the level criterion. No training here (see test_localize_real.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from rsna_lumbar.dicom.volume import Volume
from rsna_lumbar.geometry.affine import slice_affine
from rsna_lumbar.localize.keypoints import dataset as D
from rsna_lumbar.localize.keypoints.dataset import cell_centres
from rsna_lumbar.localize.keypoints.model import HeatmapNet, decode_peaks, load_models, save_models
from rsna_lumbar.localize.keypoints.predict import chain_decode, decode_canal
from rsna_lumbar.localize.keypoints.realworld import canal_truth, measure, real_exams, real_sample, real_truth, real_volume
from rsna_lumbar.vocabulary import LEVELS, Condition, Level


def _volume(shape=(9, 300, 260), pixel_spacing=(0.9, 0.7)) -> Volume:
    iop = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal
    affine = slice_affine(iop, (-16.0, -90.0, 120.0), pixel_spacing, (4.0, 0.0, 0.0))
    return Volume(pixels=np.random.default_rng(0).random(shape, dtype=np.float32), affine=affine,
                  study_id=7, series_id=8, instance_numbers=np.arange(shape[0], 0, -1))


@pytest.mark.parametrize("stride", [2, 4])
def test_label_point_round_trips_through_grid_target_and_decoder(stride):
    """voxel → canonical grid → augmented input → Gaussian target → decoded peak → voxel."""
    task = dataclasses.replace(D.TASKS["sag_t2"], stride=stride)
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
    assert target.shape == (5, task.input_px // stride, task.input_px // stride)
    peak_uv, score = decode_peaks(torch.from_numpy(target), stride)
    assert score[Level.L3_L4.index] > 0.7 and score[0] == 0  # grid-sampled peak
    back = D.compose(D.grid_to_voxel(volume, task.canon_px, task.canon_mm), a) @ np.r_[
        peak_uv[Level.L3_L4.index].numpy(), 1.0]
    np.testing.assert_allclose(back, [141.3, 97.8], atol=0.6)  # < 1 mm
    x, y = D.draw(sample, task, rng, augment=True)
    assert x.shape == (3, task.input_px, task.input_px) and np.isfinite(x).all()
    assert y.shape == (5, task.input_px // stride, task.input_px // stride) and y.max() <= 1.0
    net = HeatmapNet("lcnet_050", 3, 5, width=8, stride=stride).eval()
    with torch.no_grad():
        assert net(torch.from_numpy(x[None])).shape[-2:] == y.shape[-2:]


def test_mirrored_draw_moves_points_and_swaps_axial_sides():
    """A column mirror maps each point to ``input_px - 1 - u``; on axial slices left ↔ right."""
    for name in ("sag_t2", "axial"):
        task = D.TASKS[name]
        a = D.input_to_canon(task)
        mirrored = D.compose(a, D.flip_columns(task))
        point = np.array([100.0, 80.0, 1.0])  # canonical (u, v)
        u, v = D.invert(a) @ point
        um, vm = D.invert(mirrored) @ point
        assert um == pytest.approx(task.input_px - 1 - u) and vm == pytest.approx(v)
    # axial: a mirrored slice shows the patient's left on the other side of the image, so the
    # side channels swap and channel 0 stays the recess on the same side of the *image*
    task = D.TASKS["axial"]
    stack = np.zeros((3, task.canon_px, task.canon_px), np.float16)
    stack[:, :, : task.canon_px // 2] = 1.0  # bright image-left half shows which way it was drawn
    sample = D.SeriesSample(1, 2, stack, np.array([[0, 60.0, 96.0, 1.0], [1, 132.0, 96.0, 1.0]]), 4.0)
    mirrored_seen = set()
    for seed in range(16):
        x, y = D.draw(sample, task, np.random.default_rng(seed), augment=True, k=1)
        uv, _ = decode_peaks(torch.from_numpy(y))
        assert uv[0, 0] < uv[1, 0]
        half = task.input_px // 2
        mirrored_seen.add(bool(x[1][:, half:].mean() > x[1][:, :half].mean()))
    assert mirrored_seen == {True, False}


def _blob(h: int, w: int, r: float, c: float, height: float, sigma: float = 0.8) -> np.ndarray:
    rr, cc = np.mgrid[0:h, 0:w]
    return height * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))


def test_chain_decode_orders_levels_and_shifts_them_together():
    """Six disc-like candidates 4 cells (40 mm) apart; each level's own argmax is ambiguous or
    wrong, the chain picks five consecutive candidates in order."""
    h = w = 32
    rows = [4, 8, 12, 16, 20, 24]

    def to_mm(rc):  # 10 mm cells; row index runs inferior (LPS −z)
        return np.c_[np.zeros(len(rc)), rc[:, 1] * 10.0, -rc[:, 0] * 10.0]

    prob = np.zeros((5, h, w), np.float32)
    for level in range(5):
        # strong evidence for candidates level+1 (the true chain starts at the second one) …
        prob[level] += _blob(h, w, rows[level + 1], 16, 0.6)
        # … but every level also likes the top candidate a little
        prob[level] += _blob(h, w, rows[0], 16, 0.3)
    prob[2] += _blob(h, w, rows[0], 16, 0.7)  # L3/L4's own argmax is wrong (top candidate)
    cells, _ = chain_decode(prob, to_mm)
    assert cells[:, 0].tolist() == rows[1:]
    # a chain too tall for the bounds (gaps of 100 mm) is refused
    wide = np.zeros((5, 64, 8), np.float32)
    for level in range(5):
        wide[level] = _blob(64, 8, 2 + level * 10, 4, 0.9)
    assert chain_decode(wide, to_mm) is None


def test_canal_point_stays_on_the_disc_the_chain_chose():
    """A level's map rising toward the next disc (a real-exam failure: L4/L5's heatmap was
    stronger on L5/S1) must not drag its point off the chosen candidate: the refined peak is
    taken where the chain measured the level's evidence (±2 cells, ±8.8 mm), not half-way to
    the next disc, where the point would be counted on the wrong level."""
    stride, scale = 2, 2.2  # input pixels of 2.2 mm: 4.4 mm cells, as the sag_t2 task
    h = w = 48
    discs = [8, 15, 22, 29, 36]  # cell rows, 7 cells = 31 mm apart
    prob = np.zeros((5, h, w), np.float32)
    for level, row in enumerate(discs):
        if level != 3:
            prob[level] = _blob(h, w, row, 20, 0.8)
    prob[3] = _blob(h, w, discs[3], 20, 0.3) + _blob(h, w, discs[4], 20, 0.7, sigma=4.0)
    volume = _volume(shape=(3, 240, 240), pixel_spacing=(1.0, 1.0))
    to_vox = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])  # input pixel → voxel (col, row)
    rows = decode_canal(torch.from_numpy(np.stack([prob] * 3)), to_vox, np.arange(3), volume, stride)
    disc_z = [volume.voxel_to_world(np.array([0.0, scale * cell_centres(r, stride), 0.0]))[2] for r in discs]
    point_z = [row["world_z"] for row in rows]
    assert np.abs(np.subtract(point_z, disc_z)).max() < 4.4  # every level within a cell of its disc


def test_level_draws_keep_the_spine_in_view_and_cut_only_outside_it():
    """Level tasks: however far the rows are shifted, the five points and the sacrum margin stay
    in the input; the field-of-view crop may blank rows above L1/L2 and below the margin (so an
    image edge says nothing about the level) but never inside that span."""
    task = D.TASKS["sag_t2"]
    stack = np.ones((5, task.canon_px, task.canon_px), np.float16)
    rows = np.linspace(40.0, 185.0, 5)  # canonical rows, 1.4 mm: L1/L2 … L5/S1 ~ 200 mm apart
    points = np.c_[np.arange(5), np.full(5, 110.0), rows, np.full(5, 2.0)]
    sample = D.SeriesSample(1, 2, stack, points, 4.0)
    rng = np.random.default_rng(0)
    cut_above = 0
    for _ in range(300):
        x, y = D.draw(sample, task, rng, augment=True, k=2)
        peaks = y.reshape(5, -1).max(axis=1)
        assert (peaks > 0.5).all()  # every level's Gaussian lies inside the heatmap
        cells = [np.unravel_index(int(np.argmax(y[level])), y.shape[1:]) for level in range(5)]
        (top, col_top), (bottom, col_bottom) = cells[0], cells[4]
        r_top, r_bottom = top * task.stride, (bottom + 1) * task.stride
        assert (x[1, r_top:r_bottom, col_bottom * task.stride] != 0).all()  # not blanked
        cut_above += int((x[1, : max(r_top - 12, 0)] == 0).all(axis=1).any())
    assert cut_above > 20  # crops above the spine do happen

    # the shift is pulled back: content pushed 100 mm down ends with its margin on the last row
    a = D.input_to_canon(task, 1.0, 0.0, (0.0, -100.0))
    moved, (span_top, span_bottom) = D._keep_levels_in_view(a, points[:, 1:3], task)
    v = (D.invert(moved) @ np.c_[points[:, 1:3], np.ones(5)].T)[1]
    margin_px = D.CAUDAL_MARGIN_MM / task.input_mm
    assert span_bottom == pytest.approx(task.input_px - 1) and v.max() == pytest.approx(span_bottom - margin_px)
    assert span_top == pytest.approx(v.min() - D.CRANIAL_MARGIN_MM / task.input_mm)


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
    stride = D.TASKS["sag_t2"].stride
    model = HeatmapNet("lcnet_050", 3, 5, width=16, stride=stride).eval()
    x = torch.rand(1, 3, 64, 64)
    config = {"backbone": "lcnet_050", "width": 16, "tasks": {"sag_t2": D.TASKS["sag_t2"].as_config()}}
    save_models(tmp_path / "loc", config, {"sag_t2": [model]})
    loaded_config, models = load_models(tmp_path / "loc")
    assert loaded_config["files"]["sag_t2"] == ["sag_t2_fold0.safetensors"]
    with torch.no_grad():
        assert model(x).shape == (1, 5, 64 // stride, 64 // stride)
        torch.testing.assert_close(models["sag_t2"][0](x), model(x))
    with pytest.raises(FileNotFoundError, match="rsna-lumbar localize --split train"):
        load_models(tmp_path / "missing")


def test_seeds_train_several_models_per_fold_and_average_them(tmp_path):
    from rsna_lumbar.localize.keypoints.config import TrainConfig
    from rsna_lumbar.localize.keypoints.model import fold_members
    from rsna_lumbar.localize.keypoints.train import read_or_make_folds, study_stacks
    from rsna_lumbar.localize.oof import train_oof
    from rsna_lumbar.localize.stage import predict_study, stacks_by_study
    from rsna_lumbar.synth.generate import generate

    torch.set_num_threads(1)
    data = generate(tmp_path / "data", studies=2, seed=1, test_studies=0, workers=1, scale=4,
                    progress=False)  # fmt: skip
    cfg = TrainConfig(backbone="lcnet_050", width=16, steps=2, batch=2, seeds=2)
    out, folder = tmp_path / "oof.csv", tmp_path / "loc"
    train_oof(data, out, folder, work=tmp_path / "work", n_folds=2, cfg=cfg, tasks=("sag_t2",),
              real=False, workers=1)  # fmt: skip
    config, models = load_models(folder)
    assert config["models_per_fold"] == 2
    assert json.loads((folder / "provenance.json").read_text())["data_kind"] == "synthetic"
    assert config["files"]["sag_t2"] == [f"sag_t2_fold{f}_seed{s}.safetensors" for f in (0, 1) for s in (0, 1)]
    pair = fold_members(config, models["sag_t2"], 1)
    assert len(pair) == 2 and pair[0] is models["sag_t2"][2]
    assert not torch.equal(*(next(iter(m.parameters())) for m in pair))  # two seeds, two models
    # the fold's study was predicted out of fold by the pair averaged, not by one of them
    study = int(read_or_make_folds(data, None, 2).set_index("study_id").fold.idxmax())
    stacks = stacks_by_study(study_stacks(data, "train", tmp_path / "work", 1))[study]
    oof = pd.read_csv(out).query("study_id == @study").confidence.to_numpy()
    with torch.no_grad():
        both = [r["confidence"] for r in predict_study({"sag_t2": pair}, stacks, data)]
        one = [r["confidence"] for r in predict_study({"sag_t2": pair[:1]}, stacks, data)]
    np.testing.assert_allclose(oof, both, atol=1e-4)
    assert not np.allclose(oof, one, atol=1e-4)
    with pytest.raises(ValueError, match="at least 1"):
        TrainConfig(seeds=0)


def test_jobs_train_the_same_models_in_parallel_processes(tmp_path):
    from rsna_lumbar.localize.keypoints.config import TrainConfig
    from rsna_lumbar.localize.keypoints.train import run_fits
    from rsna_lumbar.localize.oof import train_oof
    from rsna_lumbar.synth.generate import generate

    torch.set_num_threads(1)
    data = generate(tmp_path / "data", studies=2, seed=2, test_studies=0, workers=1, scale=4,
                    progress=False)  # fmt: skip
    cfg = TrainConfig(backbone="lcnet_050", width=16, steps=3, batch=2)
    for jobs in (1, 2):
        train_oof(data, tmp_path / f"oof{jobs}.csv", tmp_path / f"loc{jobs}",
                  work=tmp_path / "work", n_folds=2, cfg=cfg, tasks=("sag_t2", "axial"),
                  real=False, workers=1, jobs=jobs)  # fmt: skip
    files = sorted(p.name for p in (tmp_path / "loc1").glob("*.safetensors"))
    assert len(files) == 4  # two folds × two tasks
    for name in files:  # trained in two worker processes, yet bit for bit the same models
        assert (tmp_path / "loc1" / name).read_bytes() == (tmp_path / "loc2" / name).read_bytes()
    oof = [pd.read_csv(tmp_path / f"oof{jobs}.csv") for jobs in (1, 2)]
    pd.testing.assert_frame_equal(*oof)
    assert not (tmp_path / ".loc2.partial").exists()  # the resume folder goes once the run is saved
    with pytest.raises(ValueError, match="at least 1"):
        run_fits([], {}, {}, jobs=0)


def test_an_interrupted_training_run_resumes_from_the_models_it_finished(tmp_path):
    from dataclasses import replace

    from rsna_lumbar.localize.keypoints.config import TrainConfig
    from rsna_lumbar.localize.keypoints.model import save_state
    from rsna_lumbar.localize.keypoints.train import FitJob, job_key, load_samples, run_fits, study_stacks
    from rsna_lumbar.synth.generate import generate
    from rsna_lumbar.tables import read_label_coordinates

    torch.set_num_threads(1)
    data = generate(tmp_path / "data", studies=2, seed=3, test_studies=0, workers=1, scale=4,
                    progress=False)  # fmt: skip
    coords = read_label_coordinates(data / "train_label_coordinates.csv")
    stacks = study_stacks(data, "train", tmp_path / "work", 1)
    samples = {"sag_t2": load_samples(data, D.TASKS["sag_t2"], coords, stacks)}
    studies = sorted(s.study_id for s in samples["sag_t2"])
    cfg = TrainConfig(backbone="lcnet_050", width=16, steps=3, batch=2)
    fits = [FitJob(fold, frozenset({study}), "sag_t2", cfg) for fold, study in enumerate(studies)]
    resume = tmp_path / "partial"
    first = run_fits(fits, samples, {}, resume=resume)
    paths = [resume / f"{job_key(job, samples, {})}.safetensors" for job in fits]
    assert all(path.is_file() for path in paths)

    # "stopped after the first model": the second's file is gone, the first's is marked (zeros)
    # so that loading it rather than training it again shows
    marked = first[0]
    with torch.no_grad():
        for p in marked.parameters():
            p.zero_()
    save_state(marked, paths[0])
    paths[1].unlink()
    again = run_fits(fits, samples, {}, resume=resume)
    assert all((p == 0).all() for p in again[0].parameters())  # loaded
    for a, b in zip(again[1].state_dict().values(), first[1].state_dict().values()):
        torch.testing.assert_close(a, b)  # trained again, the same model
    # other settings never resume from it
    changed = replace(fits[0], cfg=replace(cfg, steps=4))
    assert job_key(changed, samples, {}) != job_key(fits[0], samples, {})
    more_seeds = replace(fits[0], cfg=replace(cfg, seeds=3))  # … but more models per fold do
    assert job_key(more_seeds, samples, {}) == job_key(fits[0], samples, {})
    assert any((p != 0).any() for p in run_fits([changed], samples, {}, resume=resume)[0].parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks the GPU where there is one")
def test_cpu_training_and_prediction_are_the_float32_computation_of_before(tmp_path):
    """``device`` (auto | cpu | cuda) changes nothing on the CPU: auto there trains and predicts
    bit for bit what ``device="cpu"`` does, and :func:`fit` is the plain float32 loop it was
    before the setting existed (no autocast, no loss scaling, the same operations in order)."""
    from dataclasses import replace

    from rsna_lumbar.localize.keypoints.config import TrainConfig
    from rsna_lumbar.localize.keypoints.train import (_batch, _new_model, fit, heatmap_loss,
                                                      load_samples, study_stacks)
    from rsna_lumbar.localize.oof import train_oof
    from rsna_lumbar.localize.stage import predict_split
    from rsna_lumbar.synth.generate import generate
    from rsna_lumbar.tables import read_label_coordinates

    torch.set_num_threads(1)
    data = generate(tmp_path / "data", studies=2, seed=4, test_studies=1, workers=1, scale=4,
                    progress=False)  # fmt: skip
    cfg = TrainConfig(backbone="lcnet_050", width=16, steps=3, batch=2)
    assert cfg.device == "auto"
    for device in ("auto", "cpu"):
        common = dict(work=tmp_path / "work", workers=1)
        train_oof(data, tmp_path / f"oof_{device}.csv", tmp_path / device, n_folds=2,
                  cfg=replace(cfg, device=device), tasks=("sag_t2", "axial"), real=False, **common)
        predict_split(data, "test", tmp_path / f"test_{device}.csv", tmp_path / device,
                      device=device, **common)  # fmt: skip
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["train"]["device"] == "cpu"
    files = sorted(p.name for p in (tmp_path / "auto").glob("*.safetensors"))
    assert len(files) == 4
    for name in files:
        assert (tmp_path / "auto" / name).read_bytes() == (tmp_path / "cpu" / name).read_bytes()
    for kind in ("oof", "test"):
        auto, cpu = (pd.read_csv(tmp_path / f"{kind}_{d}.csv") for d in ("auto", "cpu"))
        assert len(auto) > 0
        pd.testing.assert_frame_equal(auto, cpu, check_exact=True)

    # fit() against the float32 loop written out as it was
    task = D.TASKS["sag_t2"]
    coords = read_label_coordinates(data / "train_label_coordinates.csv")
    samples = load_samples(data, task, coords, study_stacks(data, "train", tmp_path / "work", 1))
    trained = fit(samples, task, cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    plain = _new_model(task, cfg)
    opt = torch.optim.AdamW(plain.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=0.15)  # fmt: skip
    plain.train()
    for _ in range(cfg.steps):
        x, y = _batch(samples, task, rng, cfg.batch)
        loss = heatmap_loss(plain(x.to(memory_format=torch.channels_last)), y, cfg.pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    for key, value in plain.state_dict().items():
        assert torch.equal(trained.state_dict()[key], value), key


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
    # tight framing blanks exactly the rows beyond 10 mm above L1/L2 and 20 mm below L5/S1
    tight = real_volume(path, framing="tight").pixels
    rows = np.nonzero(discs)[0]
    kept = np.flatnonzero(np.abs(tight).sum(axis=(0, 2)) > 0)
    assert kept.min() == rows.min() - 10 and kept.max() == rows.max() + 20
    np.testing.assert_array_equal(tight[:, kept], volume.pixels[:, kept])
    # top_cut blanks the same rows above and keeps everything below
    top_cut = real_volume(path, framing="top_cut").pixels
    kept = np.flatnonzero(np.abs(top_cut).sum(axis=(0, 2)) > 0)
    acquired = np.flatnonzero(np.abs(volume.pixels).sum(axis=(0, 2)) > 0)
    assert kept.min() == rows.min() - 10 and kept.max() == acquired.max() > rows.max() + 5
    np.testing.assert_array_equal(top_cut[:, kept], volume.pixels[:, kept])
    with pytest.raises(ValueError, match="framing"):
        real_volume(path, framing="loose")


@needs_real
def test_real_canal_training_points_sit_in_the_sac_behind_each_disc():
    for path in real_exams():
        truth, canal = real_truth(path), canal_truth(path)
        behind = canal.y.to_numpy() - truth.edge_y.to_numpy()  # LPS +y = posterior
        assert ((behind > 1.0) & (behind < 9.0)).all()
        np.testing.assert_allclose(canal.z, truth.edge_z, atol=1e-6)
    sample = real_sample(real_exams()[0])
    assert sample.points[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert np.diff(sample.points[:, 2]).min() > 15  # canonical rows run caudal, ≥ 21 mm apart


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
    on_fat = measure([dict(r, world_y=r["world_y"] + 60.0) for r in rows], truth)  # far behind
    assert not on_fat.correct.any() and on_fat.landed_on.isna().all()


def test_a_finer_input_grid_keeps_the_field_of_view_and_prediction_reads_it(tmp_path):
    from rsna_lumbar.localize.keypoints.config import TrainConfig
    from rsna_lumbar.localize.keypoints.predict import task_of
    from rsna_lumbar.localize.oof import train_oof
    from rsna_lumbar.synth.generate import generate

    assert D.task_for("sag_t1", TrainConfig()) == D.TASKS["sag_t1"]  # 0: the tasks as they were
    for name, base in D.TASKS.items():
        fine = base.at_resolution(256, 2)
        assert fine.input_px * fine.input_mm == pytest.approx(base.input_px * base.input_mm)
        assert fine.canon_px * fine.canon_mm == pytest.approx(base.canon_px * base.canon_mm, abs=1.0)
        assert fine.sigma_px * fine.input_mm == pytest.approx(base.sigma_px * base.input_mm)
        assert fine.canon_mm <= fine.input_mm and fine.stride == 2
        assert D.Task.from_config(fine.as_config()) == fine
    with pytest.raises(ValueError, match="multiple of 32"):
        TrainConfig(input_px=100)
    torch.set_num_threads(1)
    data = generate(tmp_path / "data", studies=2, seed=1, test_studies=0, workers=1, scale=4,
                    progress=False)  # fmt: skip
    cfg = TrainConfig(backbone="lcnet_050", width=16, steps=2, batch=2, input_px=160, stride=4)
    folder = tmp_path / "loc"
    train_oof(data, tmp_path / "oof.csv", folder, work=tmp_path / "work", n_folds=2, cfg=cfg,
              tasks=("sag_t2",), real=False, workers=1)  # fmt: skip
    config, models = load_models(folder)
    task = task_of(models["sag_t2"], "sag_t2")
    assert task == D.TASKS["sag_t2"].at_resolution(160, 4) and task.input_px == 160
    assert config["tasks"]["sag_t2"]["input_px"] == 160
    with torch.no_grad():  # the heatmap grid of a 160 px input on stride 4
        assert models["sag_t2"][0](torch.rand(1, 3, 160, 160)).shape == (1, 5, 40, 40)
    oof = pd.read_csv(tmp_path / "oof.csv")
    assert len(oof) == 10 and oof.world_x.notna().all()  # both studies' five levels, out of fold


def test_samples_on_disk_are_shared_by_memory_map_and_pickle_by_name(tmp_path):
    import pickle

    stack = np.random.default_rng(0).random((4, 32, 32)).astype(np.float16)
    sample = D.SeriesSample(7, 9, stack, np.zeros((1, 4)), 3.0).on_disk(tmp_path / "store")
    assert isinstance(sample.stack, np.memmap) and not sample.stack.flags.writeable
    np.testing.assert_array_equal(sample.stack, stack)
    payload = pickle.dumps(sample)
    assert len(payload) < stack.nbytes  # the file's name travels, not the pixels
    back = pickle.loads(payload)
    assert isinstance(back.stack, np.memmap) and back.study_id == 7 and back.spacing == 3.0
    np.testing.assert_array_equal(back.stack, stack)
    plain = D.SeriesSample(7, 9, stack, np.zeros((1, 4)), 3.0)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(plain)).stack, stack)
