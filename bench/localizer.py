"""Learned localiser: CPU time per study (sagittal T2 + sagittal T1 + 5 axial slices).

A study here is a real exam of ``shared/data/real-lumbar`` (17 sagittal slices, 221×221) used
as both sagittal series, plus 5 single-slice axial calls on a 192×192 stand-in: the work
``predict_study`` does for a 3-series study. Weights are those of ``weights/localizer`` when
present, else freshly initialised (same cost). Baseline: the model forward passes alone, to
show how much of the time is resampling and decoding.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from rsna_lumbar.dicom.volume import Volume
from rsna_lumbar.localize.keypoints import predict as P
from rsna_lumbar.localize.keypoints.dataset import TASKS
from rsna_lumbar.localize.keypoints.model import HeatmapNet, load_models
from rsna_lumbar.localize.keypoints.realworld import real_exams, real_volume


def _models(folder: Path) -> dict:
    if (folder / "config.json").is_file():
        return load_models(folder)[1]
    return {t: [HeatmapNet(n_points=TASKS[t].n_points, stride=TASKS[t].stride).eval()] for t in TASKS}


def _axial() -> Volume:
    pixels = np.random.default_rng(0).random((1, 192, 192), dtype=np.float32)
    return Volume(pixels=pixels, affine=np.diag([0.9, 0.9, 4.0, 1.0]), study_id=1, series_id=2)


def run(work: Path, repeats: int = 3) -> dict:
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        models = _models(Path("weights/localizer"))
        sag, axial = real_volume(real_exams()[0]), _axial()
        times, forward = [], []
        with torch.no_grad():
            for _ in range(repeats + 1):  # first pass is warm-up
                t0 = time.perf_counter()
                canal = P.canal_points(models["sag_t2"], sag)
                P.foramen_points(models["sag_t1"], sag, canal)
                for _ in range(5):
                    P.slice_heatmaps(models["axial"], axial, TASKS["axial"], [0])
                times.append(time.perf_counter() - t0)
                x = torch.rand(sag.shape[0], 3, 128, 128).to(memory_format=torch.channels_last)
                t0 = time.perf_counter()
                for task in ("sag_t2", "sag_t1"):
                    for m in models[task]:
                        m(x)
                for m in models["axial"]:
                    m(x[:5])
                forward.append(time.perf_counter() - t0)
        out[f"threads_{threads}"] = {
            "s_per_study": round(float(np.median(times[1:])), 3),
            "forward_only_s": round(float(np.median(forward[1:])), 3),
            "models_per_task": len(models["sag_t2"]),
        }
    return out
