"""``predict`` seconds per study, stage by stage, and the projection for Kaggle's hidden test.

Two ensembles of the same shape as what users ship — the demo's (the ``cpu`` config, 2 folds)
and that plus the ``default`` resnet18 member (2 folds) — each with the learned localiser, on
the synthetic test split. Training quality does not change inference cost, so the members train
one epoch. Each ensemble runs twice in the same process:

* ``streaming`` — :func:`rsna_lumbar.inference.predict.predict_split` as shipped: the members
  predict each study as its crops land, while the pool decodes the next studies;
* ``sequential`` (the baseline) — the same stages one after the other: every study's crops
  first, then the members over every study.

Projection: seconds per study × 722 studies (the hidden test's estimated size, docs/competition.md)
against the 9 h limit, on this machine's CPU.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

HIDDEN_TEST_STUDIES = 722
KAGGLE_LIMIT_H = 9.0
TRAIN_STUDIES, TEST_STUDIES = 8, 12


def _train(data: Path, work: Path, weights: Path) -> None:
    from rsna_lumbar.crops.stage import build_crops
    from rsna_lumbar.folds import make_folds, write_folds
    from rsna_lumbar.localize.keypoints.dataset import TASKS
    from rsna_lumbar.localize.oof import train_oof
    from rsna_lumbar.priors import class_priors, save_priors
    from rsna_lumbar.tables import read_train
    from rsna_lumbar.training.config import load_config
    from rsna_lumbar.training.loop import train_cv

    train = read_train(data / "train.csv")
    folds = work / "folds.csv"
    write_folds(make_folds(train, k=2, seed=0), folds)
    save_priors(class_priors(train), weights / "priors.json")
    crops = work / "crops_train"
    build_crops(data, "train", crops, work=work, progress=False, montages=0)
    for config in ("cpu", "default"):
        train_cv(crops, folds, data / "train.csv", load_config(config, ["train.epochs=1"]),
                 weights / f"severity_{config}")  # fmt: skip
    train_oof(data, work / "localize_oof.csv", weights / "localizer", work=work, folds=folds,
              steps={task: 5 for task in TASKS}, real=False)  # fmt: skip


def _models_root(weights: Path, root: Path, members: list[str]) -> Path:
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    weights = weights.resolve()  # the manifest's paths are relative to ITS folder otherwise
    manifest = {"members": [{"path": str(weights / m), "weight": 1.0} for m in members],
                "localizer": str(weights / "localizer")}
    (root / "ensemble.yaml").write_text(yaml.safe_dump(manifest))
    shutil.copy(weights / "priors.json", root / "priors.json")
    return root


def _sequential(data: Path, models: Path, work: Path) -> dict[str, float]:
    """The baseline: localise every study, then cut every study's crops, then run each member
    over every study — the public stage functions one after the other."""
    import numpy as np

    from rsna_lumbar.crops.stage import build_crops
    from rsna_lumbar.inference.ensemble import read_ensemble
    from rsna_lumbar.localize.stage import predict_split as predict_points
    from rsna_lumbar.models import load_model_folder
    from rsna_lumbar.tables import split_study_ids

    seconds = {}
    mark = time.perf_counter()
    ensemble = read_ensemble(models)
    study_ids = split_study_ids(data, "test")
    points = work / "points_test.csv"
    predict_points(data, "test", points, ensemble.localizer, work=work, device="cpu")
    seconds["localise"] = time.perf_counter() - mark
    mark = time.perf_counter()
    members = [load_model_folder(member.path) for member in ensemble.members]
    seconds["load models"] = time.perf_counter() - mark
    mark = time.perf_counter()
    build_crops(data, "test", work / "crops_test", points=points, work=work, progress=False,
                montages=0)  # fmt: skip
    seconds["crops"] = time.perf_counter() - mark
    mark = time.perf_counter()
    for member in members:
        for start in range(0, len(study_ids), 8):
            batch = {}
            for study_id in study_ids[start:start + 8]:
                with np.load(work / "crops_test" / f"{study_id}.npz") as loaded:
                    batch[study_id] = {key: loaded[key] for key in loaded.files}
            member.predict_studies(batch)
    seconds["models"] = time.perf_counter() - mark
    return seconds


def _streaming(data: Path, models: Path, work: Path) -> dict[str, float]:
    from rsna_lumbar.inference.predict import predict_split

    seconds: dict[str, float] = {}
    predict_split(data, "test", work / "submission.csv", models, work=work, timings=seconds)
    return seconds


def run(out_dir: Path) -> dict:
    from rsna_lumbar.synth.generate import generate

    data = generate(out_dir / "data", TRAIN_STUDIES, seed=21, test_studies=TEST_STUDIES,
                    progress=False)  # fmt: skip
    weights = out_dir / "weights"
    if not (weights / "localizer" / "metrics.json").is_file():
        _train(data, out_dir / "train_work", weights)
    load = os.getloadavg()[0]
    ensembles = {"demo (cpu ×2 folds)": ["severity_cpu"],
                 "cpu + resnet18 (×2 folds each)": ["severity_cpu", "severity_default"]}
    result: dict = {"test_studies": TEST_STUDIES, "load_average_before": round(load, 2),
                    "cpus": os.cpu_count(), "ensembles": {}}  # fmt: skip
    for name, members in ensembles.items():
        models = _models_root(weights, out_dir / "models" / name.split()[0].replace("+", ""),
                              members)  # fmt: skip
        figures = {}
        for mode, function in (("sequential", _sequential), ("streaming", _streaming)):
            work = out_dir / "predict" / f"{models.name}_{mode}"
            shutil.rmtree(work, ignore_errors=True)
            started = time.perf_counter()
            stages = function(data, models, work)
            total = time.perf_counter() - started
            per_study = total / TEST_STUDIES
            figures[mode] = {
                "s_per_study": round(per_study, 3),
                "stages_s_per_study": {k: round(v / TEST_STUDIES, 3) for k, v in stages.items()},
                "projected_hidden_test_h": round(per_study * HIDDEN_TEST_STUDIES / 3600, 2),
            }
        figures["streaming_speedup"] = round(
            figures["sequential"]["s_per_study"] / figures["streaming"]["s_per_study"], 2)
        figures["fits_kaggle_9h_on_this_cpu"] = (
            figures["streaming"]["projected_hidden_test_h"] < KAGGLE_LIMIT_H)
        result["ensembles"][name] = figures
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    return result
