"""The real scale: a synthetic competition of the real file count through index, localiser
prediction and crops — wall time, peak resident memory and disk per stage.

``python -m bench scale`` makes 2,000 train + 100 test synthetic studies (about the real
1,975 studies; the synthetic studies hold fewer files each than the real ones' ~75), then runs
each stage in a process of its own; ``peak_rss_gb`` is the peak resident memory of the largest
single process of the stage (the stage process or one of its workers, ``getrusage``), not their
sum:

* ``index``  — ``rsna-lumbar index`` of the train split (header-only scan, worker pool);
* ``localise`` — the learned localiser's prediction on the test split, building the test
  split's index first (a localiser trained for a few steps on 8 studies: prediction costs the
  same whatever the weights);
* ``crops``  — the crops of the train split at the labelled points (worker pool).

Baseline in the same run: pydicom's ``dcmread(stop_before_pixels=True)`` of every train file in
one process, the naive header scan the index replaces (it runs first, so both read the files
from the same warm page cache after generation). The projection to the real 1,975
studies is linear in the studies (every stage is per study). The goal: index + crops ≤ 0.5 s per
study on 2 cores, no stage above 6 GB resident.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REAL_STUDIES = 1975
GOAL_S_PER_STUDY = 0.5
GOAL_PEAK_GB = 6.0

# Each stage runs as `python -c STAGE_SCRIPT name data work`: it prints one JSON line with its
# peak resident memory (itself and its worker processes) when done.
STAGE_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
name, data, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
started = time.perf_counter()
if name == "index":
    from rsna_lumbar.dicom.index import write_index
    write_index(data, "train", work, progress=False)
elif name == "localise":
    from rsna_lumbar.localize.stage import predict_split
    predict_split(data, "test", work / "points_test.csv", work / "localizer", work=work,
                  device="cpu")
elif name == "crops":
    from rsna_lumbar.crops.stage import build_crops
    build_crops(data, "train", work / "crops_train", work=work, progress=False, montages=0)
elif name == "baseline_headers":
    import pydicom
    for path in sorted((data / "train_images").rglob("*.dcm")):
        pydicom.dcmread(path, stop_before_pixels=True)
# VmHWM, not RUSAGE_SELF: a process started by fork + exec inherits its parent's ru_maxrss (the
# benchmark's own, after generating the data); VmHWM belongs to this process's memory alone.
own_kb = next(int(line.split()[1]) for line in open("/proc/self/status")
              if line.startswith("VmHWM:"))
peak_kb = max(own_kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"wall_s": round(time.perf_counter() - started, 2),
                  "peak_rss_gb": round(peak_kb / 2**20, 3)}))
"""


def _stage(name: str, data: Path, work: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", STAGE_SCRIPT, name, str(data), str(work)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"stage {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _disk_gb(path: Path) -> float:
    total = sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
    return round(total / 2**30, 3)


def _localiser(data: Path, work: Path) -> None:
    """A localiser trained for a few steps on the first 8 studies (prediction cost only)."""
    from rsna_lumbar.localize.keypoints.config import TrainConfig
    from rsna_lumbar.localize.oof import train_oof

    small = work / "small"
    if (work / "localizer" / "config.json").is_file():
        return
    from rsna_lumbar.synth.generate import generate

    generate(small, 8, seed=5, test_studies=1, progress=False)
    train_oof(small, work / "small_oof.csv", work / "localizer", work=small / "work", n_folds=2,
              cfg=TrainConfig(batch=4, device="cpu"), steps={"sag_t2": 2, "sag_t1": 2, "axial": 2},
              real=False)  # fmt: skip


def run(out_dir: Path, train_studies: int = 2000, test_studies: int = 100) -> dict:
    from rsna_lumbar.synth.generate import generate

    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "data"
    started = time.perf_counter()
    generate(data, train_studies, seed=33, test_studies=test_studies, progress=False)
    synth_s = time.perf_counter() - started
    files = sum(1 for _ in (data / "train_images").rglob("*.dcm"))
    work = out_dir / "work"
    shutil.rmtree(work / "index", ignore_errors=True)
    shutil.rmtree(work / "crops_train", ignore_errors=True)
    _localiser(data, work)
    stages = {name: _stage(name, data, work)
              for name in ("baseline_headers", "index", "localise", "crops")}
    per_study = {"index": stages["index"]["wall_s"] / train_studies,
                 "baseline_headers": stages["baseline_headers"]["wall_s"] / train_studies,
                 "localise": stages["localise"]["wall_s"] / test_studies,
                 "crops": stages["crops"]["wall_s"] / train_studies}
    index_crops = per_study["index"] + per_study["crops"]
    peak = max(stage["peak_rss_gb"] for stage in stages.values())
    return {
        "command": f"python -m bench scale (train_studies={train_studies}, "
                   f"test_studies={test_studies})",
        "train_studies": train_studies, "test_studies": test_studies,
        "train_dicom_files": files, "cpus": os.cpu_count(),
        "synth_s": round(synth_s, 1),  # generating the data (about 0 when it existed already)
        "stages": stages,
        "s_per_study": {k: round(v, 4) for k, v in per_study.items()},
        "index_speedup_vs_baseline": round(per_study["baseline_headers"] / per_study["index"], 2),
        "disk_gb": {"data": _disk_gb(data), "index": _disk_gb(work / "index"),
                    "crops_train": _disk_gb(work / "crops_train")},
        "projection_real_1975_studies_h": {
            k: round(v * REAL_STUDIES / 3600, 2) for k, v in per_study.items()},
        "goals": {"index_plus_crops_s_per_study": round(index_crops, 4),
                  "index_plus_crops_within_0.5_s": index_crops <= GOAL_S_PER_STUDY,
                  "peak_rss_gb": peak, "peak_within_6_gb": peak <= GOAL_PEAK_GB},
    }
