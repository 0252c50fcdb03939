"""Crop extraction, studies/s: cold (decode DICOM + resample) versus from the cache (load npz).

Same synthetic studies, same run; the cold pass uses every core.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from rsna_lumbar.crops.stage import build_crops
from rsna_lumbar.synth.generate import generate

STUDIES = 8


def run(out_dir: Path) -> dict:
    data = generate(out_dir / "data", STUDIES, seed=11, test_studies=1)
    cache = out_dir / "crops"
    build_crops(data, "train", cache, work=out_dir / "work", progress=False, montages=0)  # index
    started = time.perf_counter()
    build_crops(data, "train", cache, work=out_dir / "work", force=True, progress=False, montages=0)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    n_arrays = 0
    for npz in sorted(cache.glob("*.npz")):
        with np.load(npz) as arrays:
            n_arrays += sum(arrays[key].size > 0 for key in arrays.files)
    warm = time.perf_counter() - started
    return {
        "studies": STUDIES,
        "workers": os.cpu_count(),
        "crops_per_study": round(n_arrays / STUDIES, 1),
        "cold_studies_per_s": round(STUDIES / cold, 2),
        "cache_studies_per_s": round(STUDIES / warm, 1),
        "cache_speedup": round(cold / warm, 1),
    }
