"""Training the keypoint models: labelled series → :class:`SeriesSample` → fold models.

``load_samples`` reads, for every study of a split, the series each task is annotated on (by
``series_description``) and turns them into samples with their label coordinates. ``fit``
trains one :class:`~.model.HeatmapNet` on some samples for a fixed number of steps
(weighted BCE on Gaussian heatmaps, AdamW, one-cycle schedule). CPU-sized defaults: timm
``lcnet_075`` encoder with a 32-channel decoder (0.7 M parameters, about 0.1 s per 128 px image
forward + backward on one core), batch 16.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from rsna_lumbar.devices import autocast, grad_scaler, resolve_device
from rsna_lumbar.dicom.index import read_index, write_index
from rsna_lumbar.dicom.reader import read_stack
from rsna_lumbar.dicom.stacks import iter_series_stacks
from rsna_lumbar.localize.keypoints.config import TrainConfig
from rsna_lumbar.localize.keypoints.dataset import SeriesSample, Task, draw, series_sample, task_for
from rsna_lumbar.localize.keypoints.model import HeatmapNet, load_state, save_state
from rsna_lumbar.parallel import ordered_map

_LOG = logging.getLogger(__name__)


def study_stacks(data: str | os.PathLike, split: str, work: str | os.PathLike,
                 workers: int | None = None,
                 index: pd.DataFrame | None = None) -> dict[tuple[int, int], list]:  # fmt: skip
    """``{(study_id, series_id): [Stack, ...]}`` from the header index: ``index`` when the caller
    has read it already (``predict`` reads it once per run), else the one built or reused in
    ``work``."""
    if index is None:
        index = read_index(write_index(data, split, work, workers=workers, progress=False))
    return dict(iter_series_stacks(index))


def best_stack(stacks: list, instances: set[int]):
    """The stack holding most of ``instances`` (the first one when none are given)."""
    if not stacks:
        return None
    return max(stacks, key=lambda s: (len(instances & set(s.instance_numbers.tolist())), -s.stack_index))


def load_samples(data: str | os.PathLike, task: Task, coords: pd.DataFrame,
                 stacks: dict[tuple[int, int], list],
                 store: str | os.PathLike | None = None) -> list[SeriesSample]:  # fmt: skip
    """One :class:`SeriesSample` per series of the task's description that has labels;
    ``store``: a folder where each sample's stack goes as it is made, memory-mapped from there
    (:meth:`SeriesSample.on_disk`), so no process holds the split's stacks in memory."""
    mine = coords[coords.condition.isin([_title(c) for c in task.conditions])]
    out = []
    for (study, series), rows in mine.groupby(["study_id", "series_id"], sort=True):
        stack = best_stack(stacks.get((int(study), int(series)), []), set(rows.instance_number.astype(int)))
        if stack is None or stack.description != task.description:
            continue
        try:
            volume = read_stack(stack, data)
        except Exception as exc:  # one unreadable series must not stop training
            _LOG.warning("study %s series %s: unreadable (%s); skipped", study, series, exc)
            continue
        sample = series_sample(volume, rows, task)
        out.append(sample.on_disk(Path(store)) if store is not None else sample)
    return out


def _title(condition_value: str) -> str:
    from rsna_lumbar.vocabulary import Condition

    return Condition(condition_value).title


def _batch(samples: list[SeriesSample], task: Task, rng: np.random.Generator, size: int,
           extra: list[SeriesSample] = (), extra_fraction: float = 0.0):  # fmt: skip
    def pick() -> SeriesSample:
        pool = extra if extra and rng.random() < extra_fraction else samples
        return pool[int(rng.integers(len(pool)))]

    xs, ys = zip(*(draw(pick(), task, rng) for _ in range(size)))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def heatmap_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """BCE on soft Gaussian targets, pixels near a point weighted ``1 + pos_weight * target``."""
    weight = 1.0 + pos_weight * target
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).mean()


def fit(samples: list[SeriesSample], task: Task, cfg: TrainConfig, log_every: int = 10,
        extra: list[SeriesSample] = ()) -> HeatmapNet:  # fmt: skip
    """Train one model for ``cfg.steps`` steps on ``samples``; returns it in eval mode, on the CPU.

    ``extra`` (e.g. the real exams) is drawn for a share ``cfg.extra_fraction`` of each batch.
    ``cfg.device``: on CUDA the model and batches live on the GPU and the forward pass runs
    under autocast (bfloat16, else float16 with loss scaling); on the CPU none of that changes a
    thing (:mod:`rsna_lumbar.devices`): float32, the same operations in the same order. The
    initial weights and the batches come from the CPU generators either way.
    """
    if not samples:
        msg = f"no labelled {task.description!r} series to train the {task.name} model on"
        raise ValueError(msg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = _new_model(task, cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=0.15)  # fmt: skip
    scaler = grad_scaler(device)
    model.train()
    start, running = time.time(), 0.0
    for step in range(cfg.steps):
        x, y = _batch(samples, task, rng, cfg.batch, extra, cfg.extra_fraction)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device):
            logits = model(x.to(memory_format=torch.channels_last))
        loss = heatmap_loss(logits.float(), y, cfg.pos_weight)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        running += float(loss.detach())
        if (step + 1) % log_every == 0:
            _LOG.info("%s step %d/%d loss %.4f (%.0f s)", task.name, step + 1, cfg.steps,
                      running / log_every, time.time() - start)  # fmt: skip
            running = 0.0
    return model.cpu().eval()


def _new_model(task: Task, cfg: TrainConfig) -> HeatmapNet:
    model = HeatmapNet(cfg.backbone, 3, task.n_points, cfg.width, task.stride)
    model.task = task  # the grid it sees: prediction reads it (HeatmapNet.task)
    return model.to(memory_format=torch.channels_last)


@dataclass(frozen=True)
class FitJob:
    """One model of an out-of-fold run: its fold, the studies that fold holds out, the task,
    the settings (``cfg.seed`` is this model's seed) and the real exams (keys of the ``extra``
    samples) it may draw from."""

    fold: int
    held: frozenset[int]
    task: str
    cfg: TrainConfig
    extra: tuple[str, ...] = ()


def job_key(job: FitJob, samples: dict[str, list[SeriesSample]], extra: dict[str, SeriesSample]) -> str:
    """Name of a job's model in a resume folder: ``{task}_fold{f}_seed{s}_{digest}``, the digest
    over everything that shapes the model (settings, task grid, held-out studies, the training
    series' shapes and label points, the real exams), so a changed run never resumes from it.
    ``cfg.seeds`` (models per fold) shapes no single model and is left out: a run with more
    seeds resumes from the models of one with fewer; so is ``cfg.device``: a run moved from the
    CPU to a GPU (or back) keeps the models already trained."""
    settings = {k: v for k, v in asdict(job.cfg).items() if k not in ("seeds", "device")}
    digest = hashlib.sha1(json.dumps([settings, task_for(job.task, job.cfg).as_config(), sorted(job.held),
                                      list(job.extra)], default=str).encode())  # fmt: skip
    train = [s for s in samples[job.task] if s.study_id not in job.held]
    for sample in train + [extra[e] for e in job.extra]:
        digest.update(f"{sample.study_id} {sample.series_id} {sample.stack.shape} {sample.spacing}".encode())
        digest.update(np.round(sample.points, 3).tobytes())
    return f"{job.task}_fold{job.fold}_seed{job.cfg.seed}_{digest.hexdigest()[:12]}"


def _fit_job(job: FitJob, samples: dict[str, list[SeriesSample]], extra: dict[str, SeriesSample],
             resume: Path | None = None) -> HeatmapNet:  # fmt: skip
    path = resume / f"{job_key(job, samples, extra)}.safetensors" if resume else None
    if path is not None and path.is_file():
        _LOG.info("%s, fold %d, seed %d: kept from an earlier run (%s)", job.task, job.fold,
                  job.cfg.seed, path)  # fmt: skip
        model = _new_model(task_for(job.task, job.cfg), job.cfg)
        model.load_state_dict(load_state(path))
        return model.eval()
    _LOG.info("training %s, fold %d, seed %d (%d steps)", job.task, job.fold, job.cfg.seed,
              job.cfg.steps)  # fmt: skip
    train = [s for s in samples[job.task] if s.study_id not in job.held]
    model = fit(train, task_for(job.task, job.cfg), job.cfg, extra=[extra[e] for e in job.extra])
    if path is not None:
        save_state(model, path)
    return model


_WORKER: dict = {}  # the samples of a process that trains models, set once by _start_worker


def _start_worker(samples: dict, extra: dict, resume: Path | None, threads: int, log_level: int) -> None:
    torch.set_num_threads(threads)
    if multiprocessing.parent_process() is not None:  # a worker: log like the caller
        logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(message)s",
                            datefmt="%H:%M:%S")  # fmt: skip
    _WORKER.update(samples=samples, extra=extra, resume=resume)


def _fit_in_worker(job: FitJob) -> dict[str, torch.Tensor]:
    return _fit_job(job, _WORKER["samples"], _WORKER["extra"], _WORKER["resume"]).state_dict()


def run_fits(fits: list[FitJob], samples: dict[str, list[SeriesSample]],
             extra: dict[str, SeriesSample], jobs: int = 1,
             resume: str | os.PathLike | None = None) -> list[HeatmapNet]:  # fmt: skip
    """Train the models of ``fits`` (returned in order, eval mode), ``jobs`` at a time.

    With ``jobs`` > 1 each runs in a worker process (:func:`rsna_lumbar.parallel.ordered_map`)
    with the caller's torch thread count (so ``jobs × threads`` should not exceed the cores),
    the samples handed to each worker once and the models with most steps started first.
    Seeding is per model, so the models are identical to those trained one after another.

    ``resume``: a folder where each model is saved (atomically) as soon as it is trained and
    from which a later call loads it instead of training it again (:func:`job_key` names it),
    so an interrupted run picks up where it stopped.
    """
    if jobs < 1:
        msg = f"jobs (models trained at once) must be at least 1, got {jobs}"
        raise ValueError(msg)
    resume = Path(resume) if resume is not None else None
    start = (samples, extra, resume, torch.get_num_threads(), logging.getLogger().getEffectiveLevel())
    order = sorted(range(len(fits)), key=lambda i: -fits[i].cfg.steps)  # longest first
    states = ordered_map(_fit_in_worker, [fits[i] for i in order], workers=jobs, progress=False,
                         initializer=_start_worker, initargs=start)  # fmt: skip
    models: list[HeatmapNet | None] = [None] * len(fits)
    for i, state in zip(order, states):
        model = _new_model(task_for(fits[i].task, fits[i].cfg), fits[i].cfg)
        model.load_state_dict(state)
        models[i] = model.eval()
    _WORKER.clear()  # a run in this process leaves no samples behind
    return models


def read_or_make_folds(data: Path, folds: Path | None, n_folds: int, seed: int = 42) -> pd.DataFrame:
    """``study_id, fold`` from ``folds`` (``rsna-lumbar folds`` output) or made here."""
    from rsna_lumbar.folds import make_folds, read_folds
    from rsna_lumbar.tables import read_train

    if folds is not None:
        return read_folds(folds)
    return make_folds(read_train(Path(data) / "train.csv"), k=n_folds, seed=seed)
