"""Benchmark: ``rsna-lumbar synth`` of 20 studies (+4 test) at full resolution.

Compares one process (the baseline) with one process per CPU, in the same run, and records
the output size. Deterministic output means both runs write identical bytes.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from rsna_lumbar.synth.generate import generate

STUDIES = 20


def _run(out: Path, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    generate(out, studies=STUDIES, seed=0, workers=workers)
    return time.perf_counter() - started


def run(work: Path) -> dict:
    work = Path(work)
    cpus = os.cpu_count() or 1
    parallel = _run(work / "parallel", cpus)
    single = _run(work / "single", 1)
    files = [p for p in (work / "parallel").rglob("*") if p.is_file()]
    result = {
        "studies": STUDIES,
        "test_studies": max(1, STUDIES // 5),
        "files": len(files),
        "megabytes": round(sum(p.stat().st_size for p in files) / 1e6, 1),
        "seconds_parallel": round(parallel, 1),
        "workers_parallel": cpus,
        "seconds_single_process": round(single, 1),
        "speedup": round(single / parallel, 2),
        "load_average_at_end": os.getloadavg()[0],
    }
    shutil.rmtree(work, ignore_errors=True)
    return result
