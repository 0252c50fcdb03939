"""``make demo``: the whole kit on synthetic data, end to end, sized for a 2-core laptop.

synth (train + test) → index → folds + prior baseline → learned localiser (out of fold) → crops
→ train (k-fold) → report → predict the test split → validate → score against the synthetic
truth (the model beside the prior baseline and the Bayes floor).
Every stage skips work whose artefact exists, so an interrupted demo resumes. ``weights/`` is
left populated, so ``rsna-lumbar predict --data DATA --split test --out sub.csv`` works after.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import pandas as pd

from rsna_lumbar.atomic import write_text

LOGGER = logging.getLogger(__name__)
FAMILY_NAMES = ("spinal", "foraminal", "subarticular")


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo. The defaults are sized for 2 CPU cores (README: measured minutes)."""

    work: Path
    weights: Path
    studies: int = 80
    test_studies: int = 10
    seed: int = 0
    folds: int = 4
    epochs: int = 10
    config: str = "cpu"
    localizer_steps: int = 60  # training steps per localiser task and fold (batch 8)
    real_exams: bool | None = None  # localiser sees the real exams (None: when present)
    overrides: tuple[str, ...] = ()  # extra dotted severity-config overrides
    threads: int | None = None  # torch CPU threads for every stage (None: torch's default)


STAGES = ("synthetic data", "header index", "folds and the class-prior baseline",
          "learned localiser (out of fold)", "crops", "severity models (k-fold)", "report",
          "predict the test split", "validate and score")  # fmt: skip


class _Progress:
    """Numbered stage banners with the minutes each stage took."""

    def __init__(self):
        self.step = 0
        self.started = time.time()
        self.minutes: dict[str, float] = {}

    def stage(self, detail: str = "") -> None:
        self._close()
        self.step += 1
        self._since = time.time()
        print(f"\n[{self.step}/{len(STAGES)}] {STAGES[self.step - 1]}"
              f"{': ' + detail if detail else ''}", flush=True)  # fmt: skip

    def _close(self) -> None:
        if self.step:
            self.minutes[STAGES[self.step - 1]] = round((time.time() - self._since) / 60, 2)

    def done(self) -> dict[str, float]:
        self._close()
        return self.minutes


def run_demo(plan: DemoPlan) -> dict:
    """Run every stage; returns the summary dict it also prints and writes to WORK/summary.json."""
    from rsna_lumbar.crops.stage import build_crops
    from rsna_lumbar.dicom.index import write_index
    from rsna_lumbar.folds import make_folds, write_folds
    from rsna_lumbar.inference.predict import predict_split
    from rsna_lumbar.priors import class_priors, prior_submission, save_priors
    from rsna_lumbar.submission import write_submission
    from rsna_lumbar.synth.generate import generate, recorded_arguments, set_arguments
    from rsna_lumbar.tables import read_train

    if plan.threads:
        import torch

        torch.set_num_threads(plan.threads)
    progress = _Progress()
    work, weights = Path(plan.work), Path(plan.weights)
    data = work / "data"
    made = recorded_arguments(data)
    wanted = set_arguments(plan.studies, plan.seed, plan.test_studies)
    if made is not None and made != wanted:
        msg = (f"{work} holds the results of another synthetic set ({made}) than this run asks "
               f"for ({wanted}); its index, localiser, crops and models would be reused as done. "
               f"Use a fresh --work and --weights, or delete {work} and {weights}'s localizer "
               f"and severity_* folders first")
        raise ValueError(msg)
    progress.stage(f"{plan.studies} train + {plan.test_studies} test studies → {data}")
    generate(data, plan.studies, plan.seed, test_studies=plan.test_studies)
    progress.stage("both splits")
    for split in ("train", "test"):
        write_index(data, split, work)
    progress.stage(f"{plan.folds} folds")
    train = read_train(data / "train.csv")
    folds_csv = work / "folds.csv"
    if not folds_csv.is_file():
        write_folds(make_folds(train, k=plan.folds, seed=plan.seed), folds_csv)
    priors = class_priors(train)
    save_priors(priors, weights / "priors.json")
    prior_csv = work / "prior_train.csv"
    write_submission(prior_submission(priors, train["study_id"]), prior_csv, train["study_id"])
    summary: dict = {"data": str(data), "weights": str(weights)}
    progress.stage(f"{plan.localizer_steps} steps per task and fold → {weights / 'localizer'}")
    summary["localizer"] = _localiser(plan, data, work, weights, folds_csv)
    progress.stage("around the labelled points of the train split")
    crops = work / "crops_train"
    build_crops(data, "train", crops, work=work)
    progress.stage(f"config {plan.config}, {plan.folds} folds × {plan.epochs} epochs")
    model_dir = weights / f"severity_{plan.config}"
    _train(plan, data, crops, folds_csv, model_dir)
    progress.stage(str(model_dir / "report"))
    summary.update(_report(model_dir, data / "train.csv"))
    progress.stage("localise → crops → models → submission")
    submission = work / "submission.csv"
    predict_split(data, "test", submission, weights, work=work / "predict")
    progress.stage("against the synthetic truth")
    summary["test"] = _score_test(data, submission, priors)
    summary["train_oof"] = {
        **summary.pop("train_oof"),
        **_score_train(data, train, prior_csv),
    }
    summary["submission"] = str(submission)
    summary["minutes"] = progress.done()
    summary["minutes"]["total"] = round((time.time() - progress.started) / 60, 1)
    write_text(work / "summary.json", json.dumps(summary, indent=1) + "\n")
    print_summary(summary)
    return summary


def _localiser(plan: DemoPlan, data: Path, work: Path, weights: Path, folds_csv: Path) -> dict:
    from rsna_lumbar.localize.keypoints.stage import TASKS, train_oof
    from rsna_lumbar.localize.keypoints.config import TrainConfig

    out, folder = work / "localize_oof.csv", weights / "localizer"
    if out.is_file() and (folder / "metrics.json").is_file():
        print(f"already trained: {folder} (delete it to retrain)")
        metrics = json.loads((folder / "metrics.json").read_text())
        return {"folder": str(folder), "oof_points": str(out), "metrics": metrics}
    metrics = train_oof(data, out, folder, work=work, folds=folds_csv, cfg=TrainConfig(batch=8),
                        steps={task: plan.localizer_steps for task in TASKS},
                        real=plan.real_exams)  # fmt: skip
    return {"folder": str(folder), "oof_points": str(out), "metrics": metrics}


def _train(plan: DemoPlan, data: Path, crops: Path, folds_csv: Path, model_dir: Path):
    from rsna_lumbar.training.config import load_config
    from rsna_lumbar.training.loop import train_cv

    overrides = [f"train.epochs={plan.epochs}", *plan.overrides]
    config = load_config(plan.config, overrides)
    train_cv(crops, folds_csv, data / "train.csv", config, model_dir, data=data,
             recipe=" ".join(["demo: --config", plan.config, *overrides]))


def _report(model_dir: Path, labels_csv: Path) -> dict:
    from rsna_lumbar.training.report import build_report, format_report

    metrics = build_report(model_dir, labels_csv)
    print(format_report(metrics))
    return {"train_oof": {"model": metrics}, "report": str(model_dir / "report")}


def _score_train(data: Path, train: pd.DataFrame, prior_csv: Path) -> dict:
    from rsna_lumbar.metric import score_submission
    from rsna_lumbar.tables import read_sample_submission

    bayes = read_sample_submission(data / "truth" / "bayes_train.csv")
    return {"prior": score_submission(train, read_sample_submission(prior_csv)).as_dict(),
            "bayes_floor": score_submission(train, bayes).as_dict()}


def _score_test(data: Path, submission: Path, priors) -> dict:
    """Validate the written submission (every row of the split) and score it, the prior
    baseline and the Bayes floor against the synthetic test truth."""
    from rsna_lumbar.metric import score_submission
    from rsna_lumbar.priors import prior_submission
    from rsna_lumbar.submission import validate_submission
    from rsna_lumbar.tables import read_sample_submission, read_train, split_study_ids

    test_ids = split_study_ids(data, "test")
    frame = read_sample_submission(submission)
    validate_submission(frame, test_ids)
    truth = read_train(data / "truth" / "test_labels.csv")
    bayes = read_sample_submission(data / "truth" / "bayes_test.csv")
    return {"model": score_submission(truth, frame).as_dict(),
            "prior": score_submission(truth, prior_submission(priors, test_ids)).as_dict(),
            "bayes_floor": score_submission(truth, bayes).as_dict()}


def print_summary(summary: dict) -> None:
    """The official metric and its four terms for the model, the prior baseline and the Bayes
    floor (out of fold on train, held out on test), then where the outputs are."""
    rows = []
    for split in ("train_oof", "test"):
        for name, result in summary.get(split, {}).items():
            if isinstance(result, dict) and "score" in result:
                rows.append({"split": split, "submission": name,
                             **{k: round(result[k], 4) for k in
                                ("score", "spinal", "foraminal", "subarticular",
                                 "any_severe_spinal")}})  # fmt: skip
    print("\n" + pd.DataFrame(rows).to_string(index=False))
    accuracy = summary.get("train_oof", {}).get("model", {}).get("balanced_accuracy", {})
    if accuracy:
        print("\nbalanced accuracy (OOF): " + ", ".join(
            f"{name} {value:.2f}" for name, value in accuracy.items() if name in FAMILY_NAMES))
    minutes = summary.get("minutes", {})
    print(f"\nsubmission: {summary.get('submission')}\nreport:     {summary.get('report')}"
          f"\nweights:    {summary.get('weights')}  (rsna-lumbar predict --models "
          f"{summary.get('weights')} ... reuses them)\n"
          f"minutes:    {', '.join(f'{k} {v}' for k, v in minutes.items())}")  # fmt: skip
