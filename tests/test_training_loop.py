"""Training on a fake crop cache: learning beats the priors out of fold; resume; predictor; report."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from crop_factory import make_crop_cache
from safetensors.torch import load_file

from rsna_lumbar.cli import main
from rsna_lumbar.models import load_model_folder
from rsna_lumbar.models.forward import softmax
from rsna_lumbar.provenance import data_fingerprint, read_provenance
from rsna_lumbar.training.config import ConfigError, load_config
from rsna_lumbar.training.loop import train_cv
from rsna_lumbar.training.oof import LOGIT_COLUMNS
from rsna_lumbar.vocabulary import TARGETS

REQUIRED = ("score", "spinal", "foraminal", "subarticular", "any_severe_spinal")


def _synthetic_folder(folder, train_csv, generator_truth: bool = True):
    """A competition folder holding ``train_csv``, marked as ``rsna-lumbar synth`` output."""
    (folder / "truth").mkdir(parents=True)
    shutil.copy(train_csv, folder / "train.csv")
    if generator_truth:
        (folder / "truth" / "manifest.json").write_text("{}")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny config trained by the CLI on 32 studies, folds 0 and 1 of 4 held out."""
    root = tmp_path_factory.mktemp("learn")
    crops, train_csv, folds_csv = make_crop_cache(root, n_studies=32, slices=3, size=16, k=4)
    out = root / "model"
    code = main(["train", "--crops", str(crops), "--folds", str(folds_csv), "--labels",
                 str(train_csv), "--data", str(_synthetic_folder(root / "data", train_csv)),
                 "--config", "tiny", "--out", str(out), "train.folds=[0,1]"])
    assert code == 0
    return crops, train_csv, folds_csv, out


def test_learns_better_than_the_priors_out_of_fold(trained):
    _, _, _, out = trained
    metrics = json.loads((out / "metrics.json").read_text())
    prior = metrics["prior_baseline"]
    assert metrics["uncalibrated"]["score"] < 0.92 * prior["score"], metrics
    assert metrics["score"] < 0.92 * prior["score"]
    assert metrics["any_severe_spinal"] < prior["any_severe_spinal"]
    # Better than chance (1/3) in every family, and Moderate is not collapsed where it is common.
    families = ("spinal", "foraminal", "subarticular")
    assert all(metrics["balanced_accuracy"][f] > 0.5 for f in families), metrics["balanced_accuracy"]
    assert all(metrics["recall"][f]["moderate"] > 0.2 for f in ("foraminal", "subarticular"))


def test_model_folder_is_self_describing(trained):
    crops, train_csv, _, out = trained
    for name in ("config.yaml", "model.json", "provenance.json", "folds.csv", "priors.json",
                 "oof.csv", "oof_logits.csv", "metrics.json", "calibration.json",
                 "fold_0/model.safetensors", "fold_1/model.safetensors", "fold_0/history.json",
                 "report/confusion_matrices.png",
                 "report/confusion_spinal_canal_stenosis.png"):
        assert (out / name).is_file(), name
    assert not (out / "fold_0" / "last.pt").exists()
    made = read_provenance(out)
    assert made["data_kind"] == "synthetic" and made["recipe"] == "--config tiny train.folds=[0,1]"
    assert made["data_fingerprint"] == data_fingerprint(out.parent / "data")
    assert (out / "report" / "confusion_spinal_canal_stenosis.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in REQUIRED:
        assert np.isfinite(metrics[key])
    assert set(metrics["balanced_accuracy"]) >= {"spinal_canal_stenosis",
                                                 "left_subarticular_stenosis", "foraminal"}
    history = json.loads((out / "fold_0" / "history.json").read_text())
    assert len(history) == 4 and 0 <= history[0]["data_wait_share"] <= 1
    # oof.csv is a submission-format file that 'rsna-lumbar score' reads directly.
    oof = pd.read_csv(out / "oof.csv")
    assert list(oof.columns) == ["row_id", "normal_mild", "moderate", "severe"]
    assert len(oof) == 25 * 16
    assert main(["score", "--labels", str(train_csv), "--submission", str(out / "oof.csv"),
                 "--subset"]) == 0


def test_report_cli_prints_and_writes(trained, capsys):
    _, train_csv, _, out = trained
    (out / "metrics.json").unlink()
    assert main(["report", "--model", str(out), "--labels", str(train_csv)]) == 0
    text = capsys.readouterr().out
    assert "any_severe_spinal" in text and "balanced" not in text.split("\n")[0]
    assert "R moderate" in text
    assert (out / "metrics.json").is_file()


def test_predictor_reproduces_the_fold_oof_logits(trained):
    crops, _, folds_csv, out = trained
    ensemble = load_model_folder(out, folds=[0])
    ensemble.temperatures = {}
    oof = pd.read_csv(out / "oof_logits.csv")
    oof = oof[oof.fold == 0]
    study = int(oof.study_id.iloc[0])
    probs, mask = ensemble.predict_study(crops / f"{study}.npz")
    rows = oof[oof.study_id == study].set_index("row_id")
    order = [f"{study}_{c.value}_{lv.value}" for c, lv in TARGETS]
    assert mask.tolist() == (rows.loc[order, "predicted"] == 1).tolist()
    expected = softmax(rows.loc[order, list(LOGIT_COLUMNS)].to_numpy())
    np.testing.assert_allclose(probs[mask], expected[mask], atol=2e-5)
    # A study without any crop: every row is the fallback, and the mask says so.
    fallback = np.tile([0.7, 0.2, 0.1], (25, 1))
    probs, mask = ensemble.predict_study({}, fallback=fallback)
    assert not mask.any() and np.allclose(probs, fallback)
    # Unpredictable rows default to the folder's priors; the ensemble averages folds.
    both = load_model_folder(out)
    probs, mask = both.predict_study({})
    assert np.allclose(probs.sum(axis=1), 1) and len(both.models) == 2


def _fold_outputs(out):
    state = load_file(str(out / "fold_0" / "model.safetensors"))
    return state, pd.read_csv(out / "fold_0" / "oof.csv")


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, ema):
    crops, train_csv, folds_csv = make_crop_cache(tmp_path, n_studies=12, slices=3, size=16, k=2)
    config = load_config("tiny", ["train.epochs=2", "train.folds=[0]", f"train.ema={ema}"])
    full = train_cv(crops, folds_csv, train_csv, config, tmp_path / "full")
    assert full is not None
    stopped = train_cv(crops, folds_csv, train_csv, config, tmp_path / "cut", stop_after_epochs=1)
    assert stopped is None
    checkpoint = torch.load(tmp_path / "cut" / "fold_0" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert train_cv(crops, folds_csv, train_csv, config, tmp_path / "cut") is not None
    (a, oof_a), (b, oof_b) = _fold_outputs(full), _fold_outputs(tmp_path / "cut")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    pd.testing.assert_frame_equal(oof_a, oof_b, rtol=1e-4)
    # A finished fold is skipped; another configuration in the same folder is refused.
    assert train_cv(crops, folds_csv, train_csv, config, tmp_path / "cut") is not None
    other = load_config("tiny", ["train.epochs=3", "train.folds=[0]", f"train.ema={ema}"])
    with pytest.raises(ValueError, match="--force"):
        train_cv(crops, folds_csv, train_csv, other, tmp_path / "cut")
    # A run stored before a config key existed is the same run when the key is at its default.
    stored = tmp_path / "cut" / "config.yaml"
    older = yaml.safe_load(stored.read_text())
    del older["model"]["pooling"]  # at its default (null), as if the key were newer than the run
    stored.write_text(yaml.safe_dump(older))
    assert train_cv(crops, folds_csv, train_csv, config, tmp_path / "cut") is not None
    older["model"]["retired_key"] = 1
    stored.write_text(yaml.safe_dump(older))
    with pytest.raises(ValueError, match="--force"):
        train_cv(crops, folds_csv, train_csv, config, tmp_path / "cut")


def test_weight_average_follows_its_formula_and_is_what_training_saves(tmp_path):
    from rsna_lumbar.training.ema import WeightAverage

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    ema = WeightAverage(net, 0.5)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked.fill_(7)
    ema.update(net)  # first step: d = min(0.5, 1/10) = 0.1
    torch.testing.assert_close(ema.state["0.weight"], 0.1 * start["0.weight"] + 0.9 * net[0].weight)
    assert int(ema.state["1.num_batches_tracked"]) == 7  # integer buffers are copied
    assert ema.current_decay() == pytest.approx(2 / 11)
    # trained with and without the average from the same start: the saved weights differ
    crops, train_csv, folds_csv = make_crop_cache(tmp_path, n_studies=12, slices=3, size=16, k=2)
    saved = []
    for decay in (0.0, 0.9):
        config = load_config("tiny", ["train.epochs=2", "train.folds=[0]", f"train.ema={decay}"])
        train_cv(crops, folds_csv, train_csv, config, tmp_path / f"ema_{decay}")
        saved.append(_fold_outputs(tmp_path / f"ema_{decay}")[0])
    assert any(not torch.allclose(saved[0][k].float(), saved[1][k].float()) for k in saved[0])
    with pytest.raises(ConfigError, match="train.ema"):
        load_config("tiny", ["train.ema=1.0"])


def _degraded_copy(crops, dest, drop: int, seed: int = 0):
    """``crops`` with every patch moved 6 rows down, the rows moved in plain noise (crops placed
    off the structure, as by a localiser that missed it: the band that codes the grade is cut),
    and study ``drop`` left out."""
    rng = np.random.default_rng(seed)
    dest.mkdir()
    index = pd.read_csv(crops / "index.csv")
    index[index.study_id != drop].to_csv(dest / "index.csv", index=False)
    for study in sorted(set(index.study_id) - {drop}):
        arrays = dict(np.load(crops / f"{study}.npz"))
        moved = {}
        for key, patch in arrays.items():
            patch = np.roll(patch, 6, axis=-2)
            patch[..., :6, :] = rng.normal(0, 0.6, patch[..., :6, :].shape)
            moved[key] = patch
        np.savez(dest / f"{study}.npz", **moved)
    return dest


def test_report_on_other_crops_predicts_each_study_with_its_own_fold(trained, tmp_path):
    """--crops: on the training crops the re-predicted OOF equals training's (the right fold
    model per study); on off-centre crops it is worse, a missing study falls back to priors,
    and the metrics and temperatures come from those predictions."""
    crops, train_csv, _, out = trained
    baseline = pd.read_csv(out / "oof_logits.csv").set_index("row_id").sort_index()
    report = ["report", "--model", str(out), "--labels", str(train_csv)]
    assert main([*report, "--crops", str(crops)]) == 0
    again = pd.read_csv(out / "oof_logits_on_crops.csv").set_index("row_id").sort_index()
    assert again.index.equals(baseline.index)
    assert (again.fold == baseline.fold).all() and (again.predicted == baseline.predicted).all()
    np.testing.assert_allclose(again[list(LOGIT_COLUMNS)], baseline[list(LOGIT_COLUMNS)], atol=2e-4)
    clean = json.loads((out / "metrics.json").read_text())

    drop = int(baseline.study_id.iloc[0])
    shifted = _degraded_copy(crops, tmp_path / "shifted", drop)
    assert main([*report, "--crops", str(shifted)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["oof_crops"] == str(shifted) and clean["oof_crops"] == str(crops)
    assert metrics["uncalibrated"]["score"] > clean["uncalibrated"]["score"] + 0.05
    frame = pd.read_csv(out / "oof_logits_on_crops.csv")
    assert (frame[frame.study_id == drop].predicted == 0).all() and len(frame) == len(baseline)
    saved = json.loads((out / "calibration.json").read_text())["temperature"]
    assert saved == metrics["temperature"]
    assert main(report) == 0  # back to the training OOF
    assert json.loads((out / "metrics.json").read_text())["oof_crops"] == "training"


def test_provenance_is_recorded_and_other_data_is_not_mixed_in(tmp_path):
    crops, train_csv, folds_csv = make_crop_cache(tmp_path, n_studies=12, slices=3, size=16, k=2)
    config = load_config("tiny", ["train.epochs=1", "train.folds=[0]"])
    out = tmp_path / "model"
    assert train_cv(crops, folds_csv, train_csv, config, out) is not None
    assert read_provenance(out) is None  # no data folder given: nothing is claimed
    real = _synthetic_folder(tmp_path / "real", train_csv, generator_truth=False)
    with pytest.raises(ValueError, match="without a record of their data"):
        train_cv(crops, folds_csv, train_csv, config, out, data=real)  # cannot vouch for fold 0
    assert train_cv(crops, folds_csv, train_csv, config, out, data=real, recipe="r",
                    force=True) is not None
    made = read_provenance(out)
    assert (made["data_kind"], made["recipe"]) == ("competition", "r")
    synthetic = _synthetic_folder(tmp_path / "synth", train_csv)
    (synthetic / "train_images").mkdir()
    (synthetic / "train_images" / "1.dcm").write_bytes(b"x")
    with pytest.raises(ValueError, match="other data"):
        train_cv(crops, folds_csv, train_csv, config, out, data=synthetic)
    assert train_cv(crops, folds_csv, train_csv, config, out, data=synthetic, force=True)
    made = read_provenance(out)
    assert made["data_kind"] == "synthetic"
    assert made["recipe"] == f"{config.model.spec} (resolved: config.yaml)"
    # a study's crops recorded as cut from another folder (crops/stage.py's made_from)
    made_from = {"data_folder": str(tmp_path / "other")}
    (crops / "999.json").write_text(json.dumps({"study_id": 999, "made_from": made_from}))
    with pytest.raises(ValueError, match="were cut from .*other, not from"):
        train_cv(crops, folds_csv, train_csv, config, tmp_path / "model2", data=synthetic)


def test_test_time_augmentation_averages_the_canal_grades_of_the_mirrored_crops(trained):
    from rsna_lumbar.models.predictor import _mirrored

    crops, _, _, out = trained
    ensemble = load_model_folder(out)
    study = int(pd.read_csv(out / "oof.csv").row_id.str.split("_").str[0].iloc[0])
    with np.load(crops / f"{study}.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    mirrored = {k: _mirrored(k, a) for k, a in arrays.items()}
    changed = [k for k in arrays if not np.array_equal(arrays[k], mirrored[k])]
    assert changed and all(k.startswith("spinal_canal_stenosis/") for k in changed)
    plain, mask = ensemble.predict_study(arrays)
    flipped, _ = ensemble.predict_study(mirrored)
    ensemble.tta = True
    both, both_mask = ensemble.predict_study(arrays)
    assert ensemble.tta_seconds > 0 and (both_mask == mask).all()
    canal = np.array([c.value == "spinal_canal_stenosis" for c, _ in TARGETS]) & mask
    # logits averaged = log-probabilities averaged, renormalised (a softmax ignores a shift)
    np.testing.assert_allclose(both[canal], softmax((np.log(plain[canal]) + np.log(flipped[canal])) / 2),
                               atol=1e-5)
    assert not np.allclose(both[canal], plain[canal], atol=1e-4)  # the mirrored pass counted
    np.testing.assert_allclose(both[~canal], plain[~canal], atol=1e-6)  # sided rows as they were
    np.testing.assert_allclose(ensemble.predict_study(mirrored)[0], both, atol=1e-5)  # symmetric


def test_a_crop_cache_of_another_geometry_is_refused_by_the_held_out_report(trained, tmp_path, capsys):
    from rsna_lumbar.training.held_out import held_out_logits
    from rsna_lumbar.tables import read_train

    crops, train_csv, _, out = trained
    assert json.loads((out / "model.json").read_text())["crops"]["foraminal"]["sag_t1"]["px"] == 64
    other = tmp_path / "crops"
    shutil.copytree(crops, other)
    (other / "geometry.json").write_text(json.dumps({"foraminal": {"sag_t1": {"px": 96}}}))
    with pytest.raises(ValueError, match="another crop geometry"):
        held_out_logits(out, other, read_train(train_csv))
    assert len(held_out_logits(out, crops, read_train(train_csv))) > 0  # its own geometry: fine
    # resuming the folder on crops of another geometry would relabel its finished folds: refused
    data = out.parent / "data"
    before = (out / "model.json").read_text()
    code = main(["train", "--crops", str(other), "--folds", str(out / "folds.csv"), "--labels",
                 str(train_csv), "--data", str(data), "--config", "tiny", "--out", str(out),
                 "train.folds=[0,1]"])  # fmt: skip
    assert code != 0 and "another crop geometry" in capsys.readouterr().err
    assert (out / "model.json").read_text() == before


def test_held_out_logits_with_tta_average_the_mirrored_canal_crops(trained, tmp_path):
    """Out of fold with ``tta`` the canal logits are the mean of the crops' and the mirrored
    crops' (a copy of the cache with every array mirrored gives the second term); the sided
    families' logits are those without it."""
    from rsna_lumbar.crops.cache import CropCache
    from rsna_lumbar.models.predictor import _mirrored
    from rsna_lumbar.tables import read_train
    from rsna_lumbar.training.held_out import held_out_logits
    from rsna_lumbar.training.report import build_report

    crops, train_csv, _, out = trained
    train = read_train(train_csv)
    flipped_cache = tmp_path / "mirrored"
    shutil.copytree(crops, flipped_cache)
    for study in CropCache(crops).study_ids:
        with np.load(crops / f"{study}.npz") as npz:
            np.savez(flipped_cache / f"{study}.npz", **{k: _mirrored(k, npz[k]) for k in npz.files})
    plain = held_out_logits(out, crops, train)
    flipped = held_out_logits(out, flipped_cache, train)
    both = held_out_logits(out, crops, train, tta=True)
    logits = list(LOGIT_COLUMNS)
    canal = (plain.family == "spinal").to_numpy() & (plain.predicted == 1).to_numpy()
    np.testing.assert_allclose(both.loc[canal, logits], (plain.loc[canal, logits].to_numpy()
                               + flipped.loc[canal, logits].to_numpy()) / 2, atol=1e-5)  # fmt: skip
    assert not np.allclose(both.loc[canal, logits], plain.loc[canal, logits], atol=1e-4)
    np.testing.assert_allclose(both.loc[~canal, logits], plain.loc[~canal, logits], atol=1e-6)
    with pytest.raises(ValueError, match="give the crops"):
        build_report(out, train_csv, tta=True)
