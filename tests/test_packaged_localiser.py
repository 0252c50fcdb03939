"""The localiser that ships with the kit (``rsna_lumbar/localize/pretrained``): its export from a
trained folder (one fold, float16, a model card, the same bytes twice), the default-localiser
fallback of ``localize``, ``predict`` and ``run``, and the water-fat real exams' disc truth."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from rsna_lumbar.localize import packaged as P
from rsna_lumbar.localize.keypoints.model import load_models
from rsna_lumbar.localize.keypoints.realworld import real_exams, real_truth, real_volume
from rsna_lumbar.synth.generate import generate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-fold localiser folder trained for two steps on two synthetic studies."""
    from rsna_lumbar.localize.keypoints.config import TrainConfig
    from rsna_lumbar.localize.oof import train_oof

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("packaged")
    data = generate(root / "data", studies=2, seed=5, test_studies=1, workers=1, scale=4, progress=False)
    cfg = TrainConfig(backbone="lcnet_050", width=16, steps=2, batch=2)
    train_oof(data, root / "oof.csv", root / "loc", work=root / "work", n_folds=2, cfg=cfg,
              tasks=("sag_t2", "axial"), real=False, workers=1)  # fmt: skip
    return {"root": root, "data": data, "model": root / "loc"}


def test_export_ships_one_fold_in_half_precision_with_a_card_and_the_same_bytes_twice(trained):
    root = trained["root"]
    synthetic = P.held_out_metrics(trained["data"], root / "oof.csv", n_folds=2, fold=1, work=root / "work")
    first = P.export(trained["model"], root / "pkg1", fold=1, synthetic=synthetic)
    second = P.export(trained["model"], root / "pkg2", fold=1, synthetic=synthetic)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:  # a function of the run alone: byte for byte
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    config, shipped = load_models(first)
    assert config["files"] == {"sag_t2": ["sag_t2.safetensors"], "axial": ["axial.safetensors"]}
    assert config["packaged"]["fold"] == 1 and config["packaged"]["of_folds"] == 2
    with safe_open(str(first / "sag_t2.safetensors"), "pt") as weights:
        dtypes = {weights.get_tensor(k).dtype for k in weights.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    _, trained_models = load_models(trained["model"])
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():  # fold 1's model, read back from float16 into float32
        torch.testing.assert_close(shipped["sag_t2"][0](x), trained_models["sag_t2"][1](x), atol=2e-2, rtol=0)
        assert not torch.allclose(shipped["sag_t2"][0](x), trained_models["sag_t2"][0](x), atol=1e-4)
    card = (first / P.CARD).read_text()
    assert "fold 1" in card and "do not edit" in card
    assert f"| {synthetic['studies']} | {synthetic['spinal']['level_accuracy']:.3f} |" in card
    for name in ("sag_t2.safetensors", "config.json", "recipe_metrics.json"):
        assert f"`{P._sha256(first / name)[:16]}`" in card
    assert "train_seconds" not in json.loads((first / "recipe_metrics.json").read_text())


def test_resolve_prefers_the_folder_named_then_weights_localizer_then_the_packaged_one(tmp_path, caplog):
    assert P.resolve(tmp_path / "mine") == tmp_path / "mine"
    assert P.packaged() == P.PACKAGED, "the kit ships its localiser (make localiser-package)"
    with caplog.at_level(logging.INFO, logger=P.__name__):
        assert P.resolve(None, default=tmp_path / "weights" / "localizer") == P.PACKAGED
    assert "packaged localiser" in caplog.text and P.CARD in caplog.text
    (tmp_path / "weights" / "localizer").mkdir(parents=True)
    (tmp_path / "weights" / "localizer" / "config.json").write_text("{}")
    assert P.resolve(None, default=tmp_path / "weights" / "localizer") == tmp_path / "weights" / "localizer"


def test_localize_without_a_model_runs_the_packaged_localiser_and_says_so(tmp_path, monkeypatch, caplog):
    from rsna_lumbar.cli import main as cli_main

    data = generate(tmp_path / "data", studies=1, seed=4, test_studies=1, workers=1, progress=False)
    monkeypatch.chdir(tmp_path)  # no weights/localizer here
    with caplog.at_level(logging.INFO):
        assert cli_main(["localize", "--data", str(data), "--split", "test", "--out", "points.csv",
                         "--work", "work", "--tss", "off"]) == 0  # fmt: skip
    assert "using the packaged localiser" in caplog.text
    points = pd.read_csv(tmp_path / "points.csv")
    assert set(points.condition) >= {"Spinal Canal Stenosis", "Left Neural Foraminal Narrowing"}
    assert (points.source == "learned").all() and points.study_id.nunique() == 1


def test_predict_falls_back_to_the_packaged_localiser(tmp_path):
    from rsna_lumbar.inference.predict import RunSummary, _localiser_folder

    summary = RunSummary("test", 0, "submission.csv")
    assert _localiser_folder(None, summary) == P.PACKAGED and not summary.warnings
    assert _localiser_folder(tmp_path / "gone", summary) == P.PACKAGED
    assert "holds no localiser" in summary.warnings[0]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    assert _localiser_folder(tmp_path / "mine", summary) == tmp_path / "mine"


def test_a_run_with_the_packaged_localiser_copies_it_and_measures_its_points(tmp_path):
    from rsna_lumbar.cli import main as cli_main

    work, weights = tmp_path / "work", tmp_path / "weights"
    assert cli_main(["run", "--recipe", "tiny", "--work", str(work), "--weights", str(weights),
                     "--until", "localiser", "localiser=packaged"]) == 0  # fmt: skip
    summary = json.loads((work / "summary.json").read_text())
    assert summary["localiser"]["packaged"] is True
    assert 0.0 <= summary["localiser"]["level_accuracy"] <= 1.0
    for name in ("config.json", "sag_t2.safetensors", P.CARD):
        assert (weights / "localizer" / name).read_bytes() == (P.PACKAGED / name).read_bytes()
    assert len(pd.read_csv(work / "localize_oof.csv")) > 0
    assert json.loads((work / "run.json").read_text())["localiser"] == f"packaged {P.fingerprint()}"
    # run again: the copy it made is the packaged one, not a localiser trained there
    assert cli_main(["run", "--recipe", "tiny", "--work", str(work), "--weights", str(weights),
                     "--until", "localiser", "localiser=packaged"]) == 0  # fmt: skip


needs_vb3 = pytest.mark.skipif(not [p for p in real_exams() if p.stem.startswith("vb3")],
                               reason="shared/data/real-lumbar-vb3 not present")


@needs_vb3
def test_water_fat_exams_get_disc_points_between_their_vertebral_bodies():
    exams = [p for p in real_exams() if p.stem.startswith("vb3")]
    assert len(exams) == 29
    for path in exams:
        truth, volume = real_truth(path), real_volume(path)
        vertebrae = np.load(path)["vertebrae"]
        assert volume.study_id == 100 + int(path.stem[-2:])  # apart from the ivd_NN exams
        edges = truth[["edge_y", "edge_z"]].to_numpy()
        gaps = np.linalg.norm(np.diff(edges, axis=0), axis=1)
        assert truth.edge_z.is_monotonic_decreasing and ((gaps > 20) & (gaps < 50)).all(), path.stem
        m = int(np.rint(np.median(np.nonzero(vertebrae)[2])))
        for i in range(4):  # Lk/Lk+1 sits between body k's and body k+1's centroid rows …
            rows = [np.nonzero(vertebrae[:, :, m] == 41 + j)[0].mean() for j in (i, i + 1)]
            assert rows[0] < -truth.edge_z[i] < rows[1], path.stem
            # … within 5 mm of the bodies' posterior wall beside the disc (within 8 rows of it)
            r, c = np.nonzero(np.isin(vertebrae[:, :, m], (41 + i, 42 + i)))
            wall = np.percentile(c[np.abs(r + truth.edge_z[i]) < 8], 98)
            assert abs(truth.edge_y[i] - wall) < 5, path.stem


def test_push_weights_lets_the_packaged_localiser_through(trained, tmp_path):
    from rsna_lumbar.publish.staging import PublishError, check_weights

    weights = tmp_path / "weights"
    P.export(trained["model"], weights / "localizer", fold=0)
    records = check_weights(weights)
    assert records["localizer"]["data_kind"] == "packaged"
    assert records["localizer"]["commit"] is None  # no commit or date: the same bytes every run
    P.export(trained["model"], weights / "mine", fold=0)
    (weights / "mine" / "provenance.json").unlink()  # a localiser of one's own must say its data
    with pytest.raises(PublishError, match="mine: no provenance.json"):
        check_weights(weights)


def test_an_install_without_the_packaged_localiser_says_so_and_never_crashes_predict(tmp_path, monkeypatch):
    from rsna_lumbar.cli import main as cli_main
    from rsna_lumbar.inference.predict import RunSummary, _localiser_folder

    monkeypatch.setattr(P, "PACKAGED", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="lacks the packaged one"):
        P.resolve(None, default=tmp_path / "weights" / "localizer")
    summary = RunSummary("test", 0, "submission.csv")
    assert _localiser_folder(tmp_path / "gone", summary) is None  # the labelled points or priors
    assert "lacks the packaged one" in summary.warnings[0]
    work = tmp_path / "work"
    assert cli_main(["run", "--recipe", "tiny", "--work", str(work), "--weights", str(tmp_path / "w"),
                     "--until", "localiser", "localiser=packaged"]) != 0  # fmt: skip
    assert not work.exists()  # refused before any stage ran: no data made, nothing recorded


def test_a_run_never_replaces_a_localiser_trained_there(tmp_path):
    from rsna_lumbar.cli import main as cli_main

    mine = tmp_path / "weights" / "localizer"
    mine.mkdir(parents=True)
    (mine / "config.json").write_text("{}")
    (mine / "provenance.json").write_text(json.dumps({"data_kind": "synthetic"}))
    assert cli_main(["run", "--recipe", "tiny", "--work", str(tmp_path / "work"), "--weights",
                     str(tmp_path / "weights"), "--until", "localiser", "localiser=packaged"]) != 0  # fmt: skip
    assert (mine / "config.json").read_text() == "{}"  # kept
    assert not (tmp_path / "work").exists()  # refused before any stage ran
