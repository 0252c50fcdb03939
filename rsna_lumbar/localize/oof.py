"""Training the learned localiser out of fold (:func:`train_oof`, ``localize --split train``).

Per fold, one model per task (and seed) trains on the other folds' studies
(:func:`rsna_lumbar.localize.keypoints.train.run_fits`) and predicts the fold's studies through
the localise stage's chain (:func:`rsna_lumbar.localize.stage.predict_study`, learned models
only). Written: the out-of-fold points (``out``, the stage's columns), the model folder (every
fold's models, ``config.json``, ``provenance.json``, ``metrics.json``) and
``out.metrics.json`` (:func:`rsna_lumbar.localize.evaluate.evaluate`, plus the real exams').

Real exams (``real``): the real sagittal exams of ``shared/data/real-lumbar`` and
``real-lumbar-vb3`` (:mod:`rsna_lumbar.localize.keypoints.realworld`) are dealt to the folds like studies (exam
``i`` → fold ``i mod n``); each fold's ``sag_t2`` model trains on the synthetic studies and the
real exams outside its fold (``TrainConfig.extra_fraction`` of each batch real) and is measured
on the exams inside it, so the real figure is out of fold too. It is written to
``model_dir/real.csv`` and under ``"real"`` in the metrics (``"real_tight"``,
``"real_top_cut"``: the same exams framed otherwise, see
:mod:`~rsna_lumbar.localize.keypoints.realworld`); ``config.json`` records each exam's fold
(``"real_folds"``).

Seeds: with ``TrainConfig.seeds`` > 1 each fold trains that many models per task (seeds
``seed`` … ``seed + seeds − 1``), averaged out of fold — synthetic studies and real exams —
as at prediction; ``config.json`` records ``"models_per_fold"``
(:func:`~rsna_lumbar.localize.keypoints.model.fold_members` picks a fold's models).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch

from rsna_lumbar.atomic import write_csv, write_text
from rsna_lumbar.devices import choose_device
from rsna_lumbar.localize.evaluate import evaluate
from rsna_lumbar.localize.keypoints import realworld
from rsna_lumbar.localize.keypoints.dataset import TASKS, task_for
from rsna_lumbar.localize.keypoints.model import save_models
from rsna_lumbar.localize.keypoints.train import (FitJob, TrainConfig, load_samples, read_or_make_folds,
                                                  run_fits, study_stacks)
from rsna_lumbar.localize.stage import predict_study, stacks_by_study
from rsna_lumbar.points import write_points
from rsna_lumbar.provenance import write_provenance
from rsna_lumbar.tables import read_label_coordinates

_LOG = logging.getLogger(__name__)


def fit_jobs(fold_of: pd.Series, tasks: tuple[str, ...], cfg: TrainConfig, steps: dict | None,
             real_fold: dict[str, int]) -> list[FitJob]:  # fmt: skip
    """The models of an out-of-fold run, fold by fold, task by task, seed by seed.

    ``fold_of``: study_id → fold; ``real_fold``: real exam → fold index (it trains the
    ``sag_t2`` models of the other folds).
    """
    fold_ids = sorted(fold_of.unique())
    return [FitJob(index, frozenset(fold_of.index[fold_of == fold]), t,
                   replace(cfg, steps=(steps or {}).get(t, cfg.steps), seed=cfg.seed + s),
                   tuple(e for e in real_fold if real_fold[e] != index) if t == "sag_t2" else ())
            for index, fold in enumerate(fold_ids)
            for t in tasks for s in range(cfg.seeds)]  # fmt: skip


def train_oof(data, out, model_dir, *, work="work", folds=None, n_folds=5, cfg=TrainConfig(),
              tasks=tuple(TASKS), workers=None, steps: dict | None = None,
              real: bool | None = None, jobs: int = 1) -> dict:  # fmt: skip
    """Train per fold, predict each fold's studies with the model that did not see them,
    write ``out`` (OOF rows), ``model_dir`` (all fold models, ``provenance.json``: trained on
    ``data``) and the metrics JSON.

    Args:
        steps: training steps per task (``{"sag_t2": 600, ...}``); tasks not named train
            ``cfg.steps``. The budget knob: time is about linear in the steps.
        real: train and measure ``sag_t2`` with the real exams out of fold (module docstring);
            ``None``: when the exams are present and ``sag_t2`` is trained.
        jobs: models trained at once, each in its own process (:func:`.keypoints.train.run_fits`);
            the models are the same as with 1.
        cfg.device: ``auto`` (CUDA when a GPU passes the smoke test, else the CPU), ``cpu`` or
            ``cuda``, chosen once here for training and the out-of-fold predictions
            (:func:`.keypoints.train.fit`); ``config.json`` records the device that trained.

    Resuming: each model is saved to ``.{model_dir name}.partial`` next to ``model_dir`` as
    soon as it is trained; a run stopped part-way and started again with the same settings and
    data loads those instead of training them again. The folder is removed once ``model_dir``
    is written.

    Memory: each training series' canonical stack is written to a scratch folder of this run's
    own (``WORK/localiser-samples-*``) as it is made and memory-mapped from there
    (:meth:`.keypoints.dataset.SeriesSample.on_disk`): the jobs' processes share one copy
    through the page cache, and the split's stacks need not fit in memory (their size is not
    measured at 2,000 studies; it grows with the square of the canonical grid). The folder is
    removed at the end, also when training fails.
    """
    choice = choose_device(cfg.device)
    _LOG.info("localiser device: %s (%s)", choice.device, choice.note)
    cfg = replace(cfg, device=choice.device.type)
    data = Path(data)
    stacks = study_stacks(data, "train", work, workers)
    coords = read_label_coordinates(data / "train_label_coordinates.csv")
    fold_of = read_or_make_folds(data, Path(folds) if folds else None, n_folds).set_index("study_id").fold
    # the training stacks, memory-mapped from a scratch folder of this run's own (removed at the
    # end, also when training fails; another run in the same WORK has its own)
    with tempfile.TemporaryDirectory(prefix="localiser-samples-", dir=work) as scratch:
        store = Path(scratch)
        samples = {t: load_samples(data, task_for(t, cfg), coords, stacks, store / t) for t in tasks}
        by_study = stacks_by_study(stacks)
        fold_ids = sorted(fold_of.unique())
        exams = realworld.real_exams() if real or real is None else []
        if "sag_t2" not in tasks:
            exams = []
        if real and not exams:
            msg = ("real=True but no real exams found (set RSNA_REAL_LUMBAR and RSNA_REAL_LUMBAR_VB3) "
                   "or sag_t2 not trained")
            raise FileNotFoundError(msg)
        real_fold = {path.stem: i % len(fold_ids) for i, path in enumerate(exams)}
        real_samples = {path.stem: realworld.real_sample(path, task_for("sag_t2", cfg)) for path in exams}
        models: dict[str, list] = {t: [] for t in tasks}
        rows, real_rows, started = [], [], time.time()
        fits = fit_jobs(fold_of, tasks, cfg, steps, real_fold)
        resume = Path(model_dir).parent / f".{Path(model_dir).name}.partial"  # models as they finish
        trained = list(zip(fits, run_fits(fits, samples, real_samples, jobs, resume)))
        for index, fold in enumerate(fold_ids):
            held = set(fold_of.index[fold_of == fold])
            fold_models = {t: [m.to(choice.device) for job, m in trained
                               if job.fold == index and job.task == t] for t in tasks}  # fmt: skip
            for t in tasks:
                models[t] += fold_models[t]
            with torch.no_grad():
                for study in sorted(held):
                    rows += predict_study(fold_models, by_study.get(int(study), []), data)
                for path in exams:
                    if real_fold[path.stem] == index:
                        for framing in realworld.FRAMINGS:
                            result = realworld.measure_exam(fold_models["sag_t2"], path, framing)
                            real_rows.append(result.assign(fold=index))
            _LOG.info("fold %s done (%.0f s)", fold, time.time() - started)
        table = write_points(rows, out)
        config = {"backbone": cfg.backbone, "width": cfg.width, "tasks": {t: task_for(t, cfg).as_config() for t in tasks},
                  "train": asdict(cfg), "steps": steps or {}, "folds": int(fold_of.nunique()),
                  "models_per_fold": cfg.seeds, "real_folds": real_fold}  # fmt: skip
        save_models(model_dir, config, models)
        write_provenance(model_dir, data, f"localize {cfg.backbone}: {int(fold_of.nunique())} folds, "
                         f"steps {steps or cfg.steps}, {len(exams)} real exams (config.json)")
        shutil.rmtree(resume, ignore_errors=True)
    metrics = evaluate(table, coords, stacks)
    if real_rows:
        real_table = pd.concat(real_rows, ignore_index=True)
        write_csv(real_table, Path(model_dir) / "real.csv")
        for framing, part in real_table.groupby("framing"):
            metrics["real" if framing == "acquired" else f"real_{framing}"] = realworld.summarise(part)
    metrics["train_seconds"] = round(time.time() - started, 1)
    text = json.dumps(metrics, indent=2) + "\n"
    write_text(Path(out).with_suffix(".metrics.json"), text)
    write_text(Path(model_dir) / "metrics.json", text)
    return metrics
