"""``make demo``: the whole kit on synthetic data, end to end, sized for a 2-core laptop.

synth (train + test) → index → folds → prior baseline → crops → train (k-fold) → report →
learned localiser → predict on the test split → validate → score against the synthetic truth.
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


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo: the defaults take about 15 minutes on 2 cores."""

    work: Path
    weights: Path
    studies: int = 40
    test_studies: int = 8
    seed: int = 0
    folds: int = 4
    epochs: int = 4
    config: str = "default"


def _banner(step: int, total: int, text: str) -> None:
    print(f"\n[{step}/{total}] {text}", flush=True)


def run_demo(plan: DemoPlan) -> dict:
    """Run every stage; returns the summary dict it also prints and writes to WORK/summary.json."""
    from rsna_lumbar.crops.stage import build_crops
    from rsna_lumbar.dicom.index import write_index
    from rsna_lumbar.folds import make_folds, write_folds
    from rsna_lumbar.inference.predict import predict_split
    from rsna_lumbar.metric import score_submission
    from rsna_lumbar.priors import class_priors, prior_submission, save_priors
    from rsna_lumbar.submission import write_submission
    from rsna_lumbar.synth.generate import generate
    from rsna_lumbar.tables import read_sample_submission, read_train, split_study_ids

    started = time.time()
    total = 8
    work, weights = Path(plan.work), Path(plan.weights)
    data = work / "data"
    _banner(1, total, f"synthetic data: {plan.studies} train + {plan.test_studies} test studies → {data}")
    generate(data, plan.studies, plan.seed, test_studies=plan.test_studies)
    _banner(2, total, "header index of both splits")
    for split in ("train", "test"):
        write_index(data, split, work)
    _banner(3, total, f"{plan.folds}-fold study split and the class-prior baseline")
    train = read_train(data / "train.csv")
    folds_csv = work / "folds.csv"
    if not folds_csv.is_file():
        write_folds(make_folds(train, k=plan.folds, seed=plan.seed), folds_csv)
    priors = class_priors(train)
    save_priors(priors, weights / "priors.json")
    prior_csv = work / "prior_train.csv"
    write_submission(prior_submission(priors, train["study_id"]), prior_csv, train["study_id"])
    _banner(4, total, "crops around the labelled points of the train split")
    crops = work / "crops_train"
    build_crops(data, "train", crops, work=work)
    summary: dict = {"data": str(data), "weights": str(weights)}
    _banner(5, total, "severity models: k-fold training and the out-of-fold report")
    model_dir = weights / f"severity_{plan.config}"
    summary.update(_train_and_report(plan, crops, folds_csv, data / "train.csv", model_dir))
    _banner(6, total, "learned localiser for the test split")
    summary.update(_localiser(plan, data, work, weights))
    _banner(7, total, "predict the test split")
    submission = work / "submission.csv"
    predict_split(data, "test", submission, weights, work=work / "predict")
    frame = read_sample_submission(submission)
    test_ids = split_study_ids(data, "test")
    assert len(frame) == 25 * len(test_ids)
    _banner(8, total, "score against the synthetic truth")
    truth_labels = read_train(data / "truth" / "test_labels.csv")
    bayes = read_sample_submission(data / "truth" / "bayes_test.csv")
    summary["test"] = {
        "model": score_submission(truth_labels, frame).as_dict(),
        "prior": score_submission(truth_labels, prior_submission(priors, test_ids)).as_dict(),
        "bayes_floor": score_submission(truth_labels, bayes).as_dict(),
    }
    train_bayes = read_sample_submission(data / "truth" / "bayes_train.csv")
    summary["train_oof"] = {
        "prior": score_submission(train, read_sample_submission(prior_csv)).as_dict(),
        "bayes_floor": score_submission(train, train_bayes).as_dict(),
        **summary.get("train_oof", {}),
    }
    summary["submission"] = str(submission)
    summary["minutes"] = round((time.time() - started) / 60, 1)
    write_text(work / "summary.json", json.dumps(summary, indent=1) + "\n")
    print_summary(summary)
    return summary


def _train_and_report(plan, crops, folds_csv, labels_csv, model_dir) -> dict:
    from rsna_lumbar.training.config import load_config
    from rsna_lumbar.training.loop import train_cv
    from rsna_lumbar.training.report import build_report, format_report

    config = load_config(plan.config, [f"train.epochs={plan.epochs}"])
    train_cv(crops, folds_csv, labels_csv, config, model_dir)
    metrics = build_report(model_dir, labels_csv)
    print(format_report(metrics))
    return {"train_oof": {"model": metrics}, "report": str(model_dir)}


def _localiser(plan, data, work, weights) -> dict:
    from rsna_lumbar.localize.keypoints.stage import train_oof

    train_oof(data, work / "localize_oof.csv", weights / "localizer", work=work,
              n_folds=plan.folds)  # fmt: skip
    return {"localizer": str(weights / "localizer")}


def print_summary(summary: dict) -> None:
    rows = []
    for split in ("train_oof", "test"):
        for name, result in summary.get(split, {}).items():
            if isinstance(result, dict) and "score" in result:
                rows.append({"split": split, "submission": name,
                             **{k: round(result[k], 4) for k in
                                ("score", "spinal", "foraminal", "subarticular",
                                 "any_severe_spinal")}})  # fmt: skip
    print("\n" + pd.DataFrame(rows).to_string(index=False))
    print(f"\nsubmission: {summary.get('submission')}\nreport:     {summary.get('report')}"
          f"\nweights:    {summary.get('weights')}\n({summary.get('minutes')} min)")  # fmt: skip
