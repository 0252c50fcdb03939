"""Learned localiser training: wall time of an out-of-fold run with ``jobs`` = 1 (the baseline,
models trained one after another) and ``jobs`` = 2 (two worker processes), same run otherwise.

The run: 16 synthetic studies (``generate``, scale 2 as in ``make localize-weights``), 4 folds,
the ``sag_t2`` and ``axial`` tasks, 100 steps of batch 8 per model, 1 torch thread per process,
no real exams — 8 models. Also checks that both runs wrote the same weights.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from rsna_lumbar.localize.keypoints.config import TrainConfig
from rsna_lumbar.localize.oof import train_oof
from rsna_lumbar.synth.generate import generate


def run(work: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    torch.set_num_threads(1)
    data = generate(work / "data", studies=16, seed=5, test_studies=0, workers=2, scale=2.0, progress=False)
    cfg = TrainConfig(steps=100, batch=8)
    out, folders = {}, {}
    for jobs in (1, 2):
        folders[jobs] = work / f"model_jobs{jobs}"
        started = time.perf_counter()
        train_oof(data, work / f"oof_jobs{jobs}.csv", folders[jobs], work=work / "work", n_folds=4,
                  cfg=cfg, tasks=("sag_t2", "axial"), real=False, workers=2, jobs=jobs)  # fmt: skip
        out[f"jobs_{jobs}_s"] = round(time.perf_counter() - started, 1)
    names = sorted(p.name for p in folders[1].glob("*.safetensors"))
    out["models"] = len(names)
    out["speedup"] = round(out["jobs_1_s"] / out["jobs_2_s"], 2)
    out["same_weights"] = all((folders[1] / n).read_bytes() == (folders[2] / n).read_bytes() for n in names)
    return out
