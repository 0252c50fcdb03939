"""Severity-model training throughput and how long a step waits for data.

A crop cache like the real one (``WORK/crops``, reused: 24 studies, 5 slices of 64 × 64 per
view, float16 npz, written by ``tests/crop_factory.py``) feeds the kit's own training step
(``StudyDataset`` → ``DataLoader`` → ``forward_batch`` → metric loss → AdamW), in the same run,
three ways:

* ``inline_disk``: batches prepared in the training process, npz read from disk every time;
* ``inline_memory``: the same with decoded studies kept in RAM (``data.cache_in_memory``);
* ``worker_memory``: one background DataLoader worker (``train.workers=1``) preparing the
  next batch while the model computes;
* ``inline_memory_ema``: ``inline_memory`` plus the update of an exponential moving average of
  the weights after every step (``train.ema``, the ``cpu`` config's 0.99), so its cost is read
  beside the same step without it, and the update alone (``ema_update_ms``, median).

For each model (``tiny`` at 16 px, the default ``resnet18_25d`` and ``efficientnet_b0_25d`` at
5 × 64 px, channels_last, augmentation on) it reports slice images per second (every present
view × slice is one backbone image), studies per second, ms per step, and ``data_wait_share``:
the fraction of step time spent waiting for the next batch. Median over the timed steps after
warm-up steps. The load average is recorded: on a shared machine the figures move with it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rsna_lumbar.crops.cache import CropCache
from rsna_lumbar.models.dataset import StudyDataset, collate, labels_by_study
from rsna_lumbar.models.folder import build_network
from rsna_lumbar.models.forward import forward_batch
from rsna_lumbar.training.config import load_config
from rsna_lumbar.training.ema import WeightAverage
from rsna_lumbar.training.loop import model_description
from rsna_lumbar.training.losses import loss_parts, metric_loss
from rsna_lumbar.tables import read_train

STUDIES, BATCH, WARMUP, TIMED = 24, 2, 2, 6
MODELS = {"tiny": ["model.spec=tiny", "model.slices=2", "model.size=16"],
          "resnet18_25d": ["model.spec=resnet18_25d"],
          "efficientnet_b0_25d": ["model.spec=efficientnet_b0_25d"]}
MODES = {"inline_disk": (0, False, 0.0), "inline_memory": (0, True, 0.0),
         "worker_memory": (1, True, 0.0), "inline_memory_ema": (0, True, 0.99)}


def _cache(work: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from crop_factory import make_crop_cache

    if not (work / "crops" / "index.csv").is_file():
        make_crop_cache(work, n_studies=STUDIES, slices=5, size=64, noise=0.6, k=2)
    return work / "crops", work / "train.csv"


def _measure(config, crops, labels, workers: int, memory: bool, ema_decay: float) -> dict:
    from rsna_lumbar.models.registry import get_spec

    spec = get_spec(config.model.spec)
    slices, size = config.model.slices or spec.slices, config.model.size or spec.size
    cache = CropCache(crops, keep_in_memory=memory)
    dataset = StudyDataset(cache, cache.study_ids, labels, config.data.families, config.data.views,
                           slices, size, augment=config.augment, slice_jitter=1,
                           level_context=config.model.level_context)
    if memory:
        for i in range(len(dataset)):
            cache.arrays(dataset.study_ids[i])  # the first epoch fills the cache
    torch.manual_seed(0)
    model = build_network(model_description(config)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema = WeightAverage(model, ema_decay) if ema_decay > 0 else None
    order = np.random.default_rng(0).permutation(len(dataset)).tolist()
    steps = WARMUP + TIMED
    batches = [order[(i * BATCH) % len(order):(i * BATCH) % len(order) + BATCH] for i in range(steps)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                         num_workers=workers)
    iterator = iter(loader)
    step_s, wait_s, images, ema_s = [], [], [], []
    model.train()
    for i in range(steps):
        start = time.perf_counter()
        batch = next(iterator)
        waited = time.perf_counter() - start
        logits = forward_batch(model, batch, torch.device("cpu"))
        loss = metric_loss(loss_parts(logits, batch["label"], (1, 2, 4), 1.0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema_start = time.perf_counter()
            ema.update(model)
            ema_s.append(time.perf_counter() - ema_start)
        if i >= WARMUP:
            step_s.append(time.perf_counter() - start)
            wait_s.append(waited)
            images.append(sum(int(m.sum()) for m in batch["mask"].values()) * slices)
    step = float(np.median(step_s))
    result = {"images_per_s": round(float(np.median(images)) / step, 1),
              "studies_per_s": round(BATCH / step, 2), "ms_per_step": round(1000 * step, 1),
              "data_wait_share": round(float(np.sum(wait_s) / np.sum(step_s)), 3)}
    if ema_s:  # the average's own update, timed alone: its share of the step, free of run noise
        result["ema_update_ms"] = round(1000 * float(np.median(ema_s[WARMUP:])), 2)
    return result


def run(work: Path) -> dict:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    work.mkdir(parents=True, exist_ok=True)
    crops, train_csv = _cache(work)
    labels = labels_by_study(read_train(train_csv))
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    result = {"threads": torch.get_num_threads(), "batch_studies": BATCH,
              "load_average_before": round(os.getloadavg()[0], 2), "models": {}}
    for name, overrides in MODELS.items():
        config = load_config("default", overrides)
        result["models"][name] = {mode: _measure(config, crops, labels, w, m, d)
                                  for mode, (w, m, d) in MODES.items()}
        print(name, result["models"][name], flush=True)
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    return result
