"""The main job end to end at a reduced size: ``rsna-lumbar run --recipe tiny`` on 8 + 3 studies
(the session fixture ``demo`` of conftest.py, shared with the Kaggle kernel's dry runs); ``make
demo`` is the same chain with the demo recipe.

Every stage runs for real (synth → index → folds → localiser → crops → k-fold training →
report → predict → validate → score); only the sizes are small. Then the user's next command,
``rsna-lumbar predict`` with the weights the demo left, must reproduce the demo's submission.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from rsna_lumbar.cli import main as cli_main
from rsna_lumbar.recipes import load_recipe
from rsna_lumbar.run import STAGES, run_chain
from rsna_lumbar.inference.predict import summary_path
from rsna_lumbar.priors import load_priors
from rsna_lumbar.submission import validate_submission
from rsna_lumbar.tables import split_study_ids


def _judged(summary) -> int:
    """Labelled rows the out-of-fold figures score (what the label-noise check judges)."""
    return summary["oof"]["labelled_points"]["rows_scored"]


def test_run_tiny_runs_every_stage_and_meets_the_summary_contract(demo):
    plan, summary = demo
    data = plan.work / "data"
    submission = pd.read_csv(summary["submission"])
    validate_submission(submission, split_study_ids(data, "test"))
    assert len(submission) == 25 * 3
    assert list(summary["stages"]) == list(STAGES)
    on_disk = json.loads((plan.work / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["recipe"] == "tiny"
    terms = {"score", "spinal", "foraminal", "subarticular", "any_severe_spinal"}
    for points in ("labelled_points", "localised_points"):
        assert terms <= set(summary["oof"][points]) and np.isfinite(summary["oof"][points]["score"])
    assert summary["bayes_floor"]["score"] < summary["prior"]["score"]
    for baseline in ("prior", "bayes_floor"):  # on the rows the OOF figures cover
        assert summary[baseline]["rows_scored"] == summary["oof"]["labelled_points"]["rows_scored"]
    test = summary["test"]
    assert test["studies"] == 3 and terms <= set(test) and np.isfinite(test["score"])
    assert test["bayes_floor"]["score"] < test["prior"]["score"]
    assert summary["localiser"]["level_accuracy"] is not None
    assert summary["localiser"]["median_error_mm"] > 0
    member = summary["members"]["severity_tiny"]["localised_points"]
    assert set(member["balanced_accuracy"]) == set(member["moderate_recall"]) == {
        "spinal", "foraminal", "subarticular"}
    noise = summary["label_noise"]  # suspects out of fold, counted against the latent grades
    suspects = pd.read_csv(noise["file"])
    assert len(suspects) == noise["suspects"] <= noise["judged"] == _judged(summary)
    assert (suspects.label != suspects.suggested).all()
    truth = noise["against_truth"]["all"]
    assert truth["labelled"] == noise["judged"] and 0 <= truth["found"] <= truth["suspects"]
    assert 0 < truth["mislabelled"] < truth["labelled"]  # the generator's reader noise
    manifest = yaml.safe_load((plan.weights / "ensemble.yaml").read_text())
    assert manifest == {"members": [{"path": "severity_tiny", "weight": 1.0}],
                        "localizer": "localizer", "tta": False}  # the tiny recipe's predict.tta


def test_run_from_the_command_line_stops_where_asked_and_refuses_bad_input(demo, tmp_path,
                                                                          capsys):
    plan, _ = demo
    work = tmp_path / "work"
    code = cli_main(["run", "--data", str(plan.work / "data"), "--work", str(work),
                     "--weights", str(tmp_path / "weights"), "--recipe", "tiny", "--until", "folds"])
    assert code == 0
    assert (work / "folds.csv").is_file() and (tmp_path / "weights" / "priors.json").is_file()
    assert not (work / "localize_oof.csv").exists()
    bad = [(["--data", str(tmp_path / "nowhere")], "is not a competition folder"),
           (["--recipe", "nosuch"], "no recipe 'nosuch'"),
           (["localiser.bogus=1"], "unknown key 'bogus'"),
           (["--data", str(plan.work / "data"), "localiser.batch=4"],
            "holds a run made with other localiser"),
           (["severity.0.overrides=[bogus.key=1]"], "unknown config key bogus")]
    if not torch.cuda.is_available():
        bad.append((["--device", "cuda"], "device cuda requested but no GPU is visible"))
    for extra, message in bad:
        capsys.readouterr()
        code = cli_main(["run", "--work", str(work), "--weights", str(tmp_path / "weights"),
                         "--recipe", "tiny", *extra])
        assert code == 1
        assert message in capsys.readouterr().err


def test_demo_leaves_weights_that_predict_reuses(demo, tmp_path):
    plan, summary = demo
    weights = plan.weights
    assert (weights / "priors.json").is_file()
    assert (weights / "localizer").is_dir()
    model_dir = weights / "severity_tiny"
    assert (model_dir / "model.json").is_file()
    assert (model_dir / "report" / "confusion_matrices.png").stat().st_size > 1000
    for folder in (model_dir, weights / "localizer"):  # what trained them is recorded
        made = json.loads((folder / "provenance.json").read_text())
        assert made["data_kind"] == "synthetic"
        assert made["data_folder"] == str((plan.work / "data").resolve())
    out = tmp_path / "sub.csv"
    code = cli_main(["predict", "--data", str(plan.work / "data"), "--split", "test",
                     "--out", str(out), "--models", str(weights), "--work", str(tmp_path / "w")])
    assert code == 0
    again, first = pd.read_csv(out), pd.read_csv(summary["submission"])
    pd.testing.assert_frame_equal(again, first, atol=1e-5, check_exact=False)


def test_run_resumes_from_its_artefacts(demo):
    plan, _ = demo
    trained = [plan.weights / "severity_tiny" / "fold_0" / "model.safetensors",
               plan.weights / "localizer" / "metrics.json", plan.work / "data" / "train.csv"]
    before = [path.stat().st_mtime_ns for path in trained]
    index = sorted((plan.work / "index").glob("*.csv"))
    indexed = [path.stat().st_mtime_ns for path in index]
    summary = run_chain(plan.recipe, plan.work, plan.weights, device="cpu")  # another --device
    assert [path.stat().st_mtime_ns for path in trained] == before
    assert [path.stat().st_mtime_ns for path in index] == indexed
    assert summary["stages"]["severity"] < 6 and summary["stages"]["localiser"] < 2


def test_run_refuses_a_weights_folder_made_from_other_data(demo, tmp_path):
    """Another data folder into the same --weights (e.g. make demo, then the real data with
    --weights weights): refused before the localiser or the priors there are overwritten."""
    plan, _ = demo
    other = load_recipe("tiny", ["synthetic.test_studies=3", "synthetic.seed=1"])
    localiser = plan.weights / "localizer" / "config.json"
    before = localiser.read_bytes(), (plan.weights / "priors.json").read_bytes()
    with pytest.raises(ValueError, match="holds a run made with other data"):
        run_chain(other, tmp_path / "work", plan.weights)
    assert (localiser.read_bytes(), (plan.weights / "priors.json").read_bytes()) == before


def _ensemble(weights, root, members: dict[str, float], broken: str | None = None):
    """A model root whose ensemble.yaml lists copies of the demo's model folder."""
    import shutil

    import yaml

    root.mkdir()
    shutil.copy(weights / "priors.json", root / "priors.json")
    shutil.copytree(weights / "localizer", root / "localizer")
    for name in members:
        shutil.copytree(weights / "severity_tiny", root / name)
    if broken:
        (root / broken / "fold_0" / "model.safetensors").write_bytes(b"not a tensor file")
    manifest = {"members": [{"path": n, "weight": w} for n, w in members.items()],
                "localizer": "localizer"}
    (root / "ensemble.yaml").write_text(yaml.safe_dump(manifest))
    return root


def _predict(plan, models, out, work, **kwargs):
    from rsna_lumbar.inference.predict import predict_split

    return predict_split(plan.work / "data", "test", out, models, work=work, **kwargs)


def test_broken_members_are_reported_and_the_others_predict(demo, tmp_path, caplog):
    plan, summary = demo
    models = _ensemble(plan.weights, tmp_path / "models", {"a": 1.0, "b": 3.0, "c": 1.0},
                       broken="c")
    out = tmp_path / "sub.csv"
    run = _predict(plan, models, out, tmp_path / "w")
    frame = pd.read_csv(out)
    validate_submission(frame, split_study_ids(plan.work / "data", "test"))
    assert any(f"member {models / 'c'} cannot be loaded" in r.message for r in caplog.records)
    fates = {Path(m.path).name: m.status for m in run.members}
    assert fates == {"a": "used", "b": "used", "c": "not loaded"}
    # a and b are copies of the demo's model: the average is what that model alone predicted
    pd.testing.assert_frame_equal(frame, pd.read_csv(summary["submission"]), atol=1e-5,
                                  check_exact=False)
    on_disk = json.loads(summary_path(out).read_text())
    assert on_disk["members"][2]["status"] == "not loaded" and on_disk["members"][2]["reason"]
    assert on_disk["targets"] == 75 and on_disk["targets_from_models"] == run.targets_from_models
    assert on_disk["device"]["device"] == "cpu"


def test_a_spent_budget_writes_every_row_from_the_fallback(demo, tmp_path):
    plan, _ = demo
    out = tmp_path / "sub.csv"
    run = _predict(plan, plan.weights, out, tmp_path / "w", budget_s=0.0)
    frame = pd.read_csv(out)
    validate_submission(frame, split_study_ids(plan.work / "data", "test"))
    priors = load_priors(plan.weights / "priors.json")
    assert np.allclose(frame[["normal_mild", "moderate", "severe"]].to_numpy(),
                       np.tile(priors, (3, 1)), atol=1e-6)
    assert run.budget["stopped_early"] and run.coverage == 0
    assert any("came from models" in p for p in run.problems())


def test_a_tight_budget_sheds_members_then_localiser_models_then_studies(demo, tmp_path):
    """A frozen clock with a budget of 1 ms: the first chunk (one study) runs with every member;
    its measured cost then projects past the budget, so member b (the last) and the localiser's
    extra models are shed, and the two studies left get the fallback — never a missing row."""
    plan, summary = demo
    models = _ensemble(plan.weights, tmp_path / "models", {"a": 1.0, "b": 3.0})
    out = tmp_path / "sub.csv"
    run = _predict(plan, models, out, tmp_path / "w", budget_s=1e-3, started_at=0.0,
                   clock=lambda: 0.0, chunk_studies=1)
    frame = pd.read_csv(out)
    test_ids = split_study_ids(plan.work / "data", "test")
    validate_submission(frame, test_ids)
    assert run.shed[0] == f"ensemble member {models / 'b'}"
    assert "localiser's extra models" in run.shed[1]
    assert {Path(m.path).name: m.status for m in run.members} == {"a": "used", "b": "shed"}
    assert run.studies_processed == 1 and run.budget["stopped_early"]
    first = pd.read_csv(summary["submission"])
    one = frame.row_id.str.startswith(f"{test_ids[0]}_")
    pd.testing.assert_frame_equal(frame[one].reset_index(drop=True),
                                  first[first.row_id.str.startswith(f"{test_ids[0]}_")]
                                  .reset_index(drop=True), atol=1e-5, check_exact=False)
    priors = load_priors(models / "priors.json")
    assert np.allclose(frame[~one][["normal_mild", "moderate", "severe"]].to_numpy(),
                       np.tile(priors, (2, 1)), atol=1e-6)


def test_run_refuses_a_work_folder_of_another_synthetic_set(demo):
    """A rerun asking for other data (another size, seed or generator VERSION) must not reuse
    the old index, localiser, crops and models: it stops before touching anything."""
    plan, _ = demo
    manifest = plan.work / "data" / "truth" / "manifest.json"
    before = manifest.read_bytes()
    bigger = load_recipe("tiny", ["synthetic.test_studies=3", "synthetic.studies=9"])
    with pytest.raises(ValueError, match="fresh --work"):
        run_chain(bigger, plan.work, plan.weights)
    assert manifest.read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA calls fail")
@pytest.mark.parametrize("fails", ["loading", "predicting"])
def test_members_that_fail_on_the_gpu_run_on_the_cpu(demo, tmp_path, monkeypatch, fails):
    """A GPU that passes the smoke test but fails the models (out of memory, a missing kernel):
    each member is reloaded onto the CPU and retried before it could be dropped. The device
    choice is forced to CUDA; on this machine every CUDA call then fails for real (no driver).
    ``predicting``: the member loads (its weights kept on the CPU) but believes it runs on
    CUDA, so its first batch fails there."""
    from rsna_lumbar import models
    from rsna_lumbar import devices as device_module

    plan, summary = demo
    forced = device_module.DeviceChoice(torch.device("cuda"), "forced by the test")
    monkeypatch.setattr(device_module, "choose_device", lambda requested: forced)
    if fails == "predicting":
        load = models.load_model_folder

        def load_believing_cuda(path, device="cpu", folds=None):
            member = load(path, device="cpu", folds=folds)
            if torch.device(device).type == "cuda":
                member.device = torch.device("cuda")
            return member

        monkeypatch.setattr(models, "load_model_folder", load_believing_cuda)
    out = tmp_path / "sub.csv"
    run = _predict(plan, plan.weights, out, tmp_path / "w")
    (member,) = run.members
    assert member.status == "used" and member.device == "cpu" and member.failed_studies == 0
    assert member.reason.startswith("on the CPU after: ")
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(summary["submission"]),
                                  atol=1e-5, check_exact=False)


def test_a_failing_chunk_keeps_the_other_chunks_predictions(demo, tmp_path, monkeypatch):
    """The crops of the second of three chunks raise (a worker killed, a full disk): its study
    keeps the priors, the first and third keep their model predictions."""
    from rsna_lumbar.crops import stage

    plan, summary = demo
    build, calls = stage.build_crops, []

    def second_call_fails(*args, **kwargs):
        calls.append(kwargs["studies"])
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return build(*args, **kwargs)

    monkeypatch.setattr(stage, "build_crops", second_call_fails)
    out = tmp_path / "sub.csv"
    run = _predict(plan, plan.weights, out, tmp_path / "w", chunk_studies=1)
    assert len(calls) == 3 and run.studies_processed == 3
    (error,) = run.errors
    assert error.startswith(f"chunk 1 (1 studies from {calls[1][0]}): OSError")
    frame, first = pd.read_csv(out), pd.read_csv(summary["submission"])
    failed = frame.row_id.str.startswith(f"{calls[1][0]}_")
    priors = load_priors(plan.weights / "priors.json")
    assert np.allclose(frame[failed][["normal_mild", "moderate", "severe"]].to_numpy(), priors)
    pd.testing.assert_frame_equal(frame[~failed].reset_index(drop=True),
                                  first[~failed].reset_index(drop=True), atol=1e-5,
                                  check_exact=False)
    assert run.coverage > 0 and not any("no ensemble member" in p for p in run.problems())


def test_an_unreadable_priors_file_falls_back_to_uniform_and_says_so(demo, tmp_path):
    plan, _ = demo
    models = tmp_path / "models"
    models.mkdir()
    (models / "priors.json").write_text('{"spinal_canal_stenosis_l1_l2": {"normal_mild": 1')
    out = tmp_path / "sub.csv"
    run = _predict(plan, models, out, tmp_path / "w")
    frame = pd.read_csv(out)
    assert len(frame) == 75 and np.allclose(frame[["normal_mild", "moderate", "severe"]], 1 / 3)
    assert run.fallback.startswith("uniform (priors.json unusable: ")
    assert any(p.startswith("the fallback is uniform probabilities") for p in run.problems())


def test_predict_decodes_each_stack_once_per_study(demo, tmp_path, monkeypatch):
    """The localiser and the crops share the run's VolumeCache: every stack either stage reads
    is decoded from DICOM exactly once (chunks of one study run the crops in this process, so
    a spy on the decoder sees both stages), and the predictions do not change."""
    from collections import Counter

    from rsna_lumbar.dicom import volume_cache

    plan, summary = demo
    decoded: Counter = Counter()
    real = volume_cache.read_stack

    def spy(stack, root):
        decoded[(stack.study_id, stack.series_id, stack.stack_index)] += 1
        return real(stack, root)

    monkeypatch.setattr(volume_cache, "read_stack", spy)
    direct: Counter = Counter()  # a stage that decodes around the cache would be counted here
    for module in ("rsna_lumbar.crops.stage", "rsna_lumbar.localize.stage"):
        monkeypatch.setattr(f"{module}.read_stack",
                            lambda stack, root, _m=module: direct.update([_m]) or real(stack, root))
    out = tmp_path / "sub.csv"
    run = _predict(plan, plan.weights, out, tmp_path / "w", chunk_studies=1)
    assert run.studies_processed == 3
    assert decoded and set(decoded.values()) == {1}, decoded
    assert not direct, direct
    assert {study for study, _, _ in decoded} == set(split_study_ids(plan.work / "data", "test"))
    assert not list((tmp_path / "w" / "volumes").glob("*.pkl"))  # emptied chunk by chunk
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(summary["submission"]),
                                  atol=1e-5, check_exact=False)


def test_a_member_of_another_crop_geometry_gets_its_own_crops_and_tta_is_shed_first(demo, tmp_path):
    plan, _ = demo
    models = _ensemble(plan.weights, tmp_path / "models", {"a": 1.0, "b": 1.0})
    described = json.loads((models / "b" / "model.json").read_text())
    assert described["crops"]["spinal"]["sag_t2"] == {"mm": 48.0, "px": 64, "slices": 5,
                                                     "context_mm": 0.0, "context_slices": 0}
    described["crops"]["spinal"]["sag_t2"] = {"mm": 48.0, "px": 48, "slices": 7}
    (models / "b" / "model.json").write_text(json.dumps(described))
    work = tmp_path / "w"
    run = _predict(plan, models, tmp_path / "sub.csv", work, tta=True)
    assert run.tta and {Path(m.path).name: m.status for m in run.members} == {"a": "used", "b": "used"}
    assert run.coverage > 0.5
    caches = {p.name: p for p in work.glob("crops_test*")}
    assert len(caches) == 2 and "crops_test" in caches  # a's (the default), then b's
    other = next(p for name, p in caches.items() if name != "crops_test")
    study = split_study_ids(plan.work / "data", "test")[0]
    with np.load(other / f"{study}.npz") as npz, np.load(caches["crops_test"] / f"{study}.npz") as default:
        assert npz["spinal_canal_stenosis/l3_l4/sag_t2"].shape == (7, 48, 48)
        assert default["spinal_canal_stenosis/l3_l4/sag_t2"].shape == (5, 64, 64)
    tight = _predict(plan, models, tmp_path / "tight.csv", tmp_path / "w2", tta=True, budget_s=1e-3,
                     started_at=0.0, clock=lambda: 0.0, chunk_studies=1)  # fmt: skip
    assert tight.shed[0] == "test-time augmentation"
    assert tight.shed[1] == f"ensemble member {models / 'b'}"


def test_the_summary_gives_test_intervals_and_the_localiser_on_the_test_split(demo, capsys):
    from rsna_lumbar.run import print_summary

    _, summary = demo
    test = summary["test"]
    lo, hi = test["interval95"]["score"]
    assert lo <= test["score"] <= hi and test["interval95"]["resamples"] > 0
    dlo, dhi = test["interval95"]["prior_minus_score"]
    assert dlo <= test["prior"]["score"] - test["score"] <= dhi
    localiser = test["localiser"]
    assert localiser["canal_points"] == 5 * test["studies"]
    assert 0 <= localiser["level_accuracy"] <= 1 and localiser["median_error_mm"] >= 0
    print_summary(summary)
    shown = capsys.readouterr().out
    assert "95 % bootstrap intervals" in shown and "localiser (test split, canal)" in shown


def test_an_ensemble_without_a_localiser_predicts_with_the_packaged_one(demo, tmp_path):
    import shutil

    import yaml

    from rsna_lumbar.localize.packaged import PACKAGED

    plan, _ = demo
    models = _ensemble(plan.weights, tmp_path / "models", {"a": 1.0})
    shutil.rmtree(models / "localizer")
    (models / "ensemble.yaml").write_text(yaml.safe_dump({"members": [{"path": "a", "weight": 1.0}]}))
    out = tmp_path / "sub.csv"
    run = _predict(plan, models, out, tmp_path / "w")
    validate_submission(pd.read_csv(out), split_study_ids(plan.work / "data", "test"))
    assert run.localiser["path"] == str(PACKAGED) and run.localiser["packaged"] is True
    assert run.targets_from_models > 0  # the member graded crops at the packaged localiser's points
    assert list((tmp_path / "w").glob("points_test_*.csv"))
