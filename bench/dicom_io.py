"""DICOM I/O: header index + Volume build vs a naive ``dcmread(...).pixel_array`` loop.

Writes a small competition-layout split once (``WORK/data``; reused by later runs): studies of
two sagittal series (17 × 384²) and one axial series of two oblique chunks (2 × 12 × 512²),
uint16, in two sets: uncompressed (Explicit VR Little Endian) and RLE Lossless. For each set,
in the same run and over the same files (page cache warm, best of ``REPEATS``):

* ``naive``: ``pydicom.dcmread(path).pixel_array`` for every file, sequentially;
* ``kit_1``: ``index_split`` + ``build_stacks`` + ``read_volumes`` in one process;
* ``kit``: the same with the default ``workers`` (all cores for the header pass; for decoding,
  all cores when the data is compressed, in-process otherwise, see ``read_volumes``).

Figures are slices per second; ``speedup`` is kit / naive. The pixel sums of both paths are
compared so that a fast wrong answer cannot pass.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pydicom

from rsna_lumbar.dicom.index import index_split
from rsna_lumbar.dicom.reader import read_volumes
from rsna_lumbar.dicom.stacks import iter_series_stacks

STUDIES = {"uncompressed": 8, "rle": 2}
REPEATS = 3


def _write(root: Path, split: str, n_studies: int, syntax: str) -> None:
    from tests.dicom_factory import (
        AXIAL, SAGITTAL, SeriesSpec, StudySpec, parallel_positions, rotate_orientation, rotation,
        write_split,
    )  # fmt: skip

    rng = np.random.default_rng(0)
    studies = []
    for s in range(n_studies):
        def image(n, size):
            base = np.linspace(0, 1500, size, dtype=np.float32)[None, None, :]
            noise = rng.integers(0, 200, (n, size, size))
            return (base + noise).astype(np.uint16)

        sag = [SeriesSpec(SAGITTAL, parallel_positions((-30, -150, 120), SAGITTAL, 17, 3.5),
                          rows=384, columns=384, pixel_spacing=(0.6, 0.6), pixels=image(17, 384),
                          transfer_syntax=syntax) for _ in range(2)]  # fmt: skip
        tilts = [rotate_orientation(AXIAL, rotation("x", a)) for a in (8.0, -6.0)]
        positions = np.vstack([parallel_positions((-100, -150, z), t, 12, 4.0)
                               for z, t in zip((-20.0, 40.0), tilts)])  # fmt: skip
        ax = SeriesSpec(np.vstack([[tilts[0]] * 12, [tilts[1]] * 12]), positions, rows=512,
                        columns=512, pixel_spacing=(0.4, 0.4), pixels=image(24, 512),
                        transfer_syntax=syntax)  # fmt: skip
        series = {100 * s + 1: ("Sagittal T1", sag[0]), 100 * s + 2: ("Sagittal T2/STIR", sag[1]),
                  100 * s + 3: ("Axial T2", ax)}  # fmt: skip
        studies.append(StudySpec(1000 + s, series))
    write_split(root, split, studies)


def _naive(files: list[Path]) -> tuple[int, float]:
    total = 0.0
    for path in files:
        total += float(pydicom.dcmread(path).pixel_array.sum(dtype=np.float64))
    return len(files), total


def _kit(root: Path, split: str, workers: int | None) -> tuple[int, float, dict]:
    started = time.perf_counter()
    index = index_split(root, split, workers=workers, progress=False).frame
    indexed = time.perf_counter()
    stacks = [s for _, series in iter_series_stacks(index) for s in series]
    grouped = time.perf_counter()
    slices, total = 0, 0.0
    for _, volume, _ in read_volumes(stacks, root, workers=workers):
        slices += volume.shape[0]
        total += float(volume.pixels.sum(dtype=np.float64))
    parts = {"index_s": indexed - started, "stacks_s": grouped - indexed,
             "volumes_s": time.perf_counter() - grouped}  # fmt: skip
    return slices, total, parts


def _best(fn, *args) -> tuple[float, tuple]:
    best, result = float("inf"), None
    for _ in range(REPEATS):
        started = time.perf_counter()
        outcome = fn(*args)
        elapsed = time.perf_counter() - started
        if elapsed < best:
            best, result = elapsed, outcome
    return best, result


def run(work: Path) -> dict:
    work = Path(work)
    cores = os.cpu_count() or 1
    out: dict = {"cores": cores, "repeats": REPEATS,
                 "load_average_before": [round(v, 2) for v in os.getloadavg()]}
    for name, n_studies in STUDIES.items():
        root = work / "data"
        marker = root / f".{name}.done"
        syntax = pydicom.uid.ExplicitVRLittleEndian if name == "uncompressed" else \
            pydicom.uid.RLELossless
        if not marker.exists():
            _write(root, name, n_studies, syntax)
            marker.touch()
        files = sorted((root / f"{name}_images").rglob("*.dcm"))
        for path in files:  # warm the page cache for every contender alike
            path.read_bytes()
        t_naive, (n_naive, sum_naive) = _best(_naive, files)
        t_one, (n_one, sum_one, parts_one) = _best(_kit, root, name, 1)
        t_all, (n_all, sum_all, parts_all) = _best(_kit, root, name, None)
        if not (n_naive == n_one == n_all and np.isclose(sum_naive, sum_one)
                and np.isclose(sum_naive, sum_all)):  # fmt: skip
            msg = f"{name}: kit and naive disagree ({n_naive}/{n_one}/{n_all} slices)"
            raise AssertionError(msg)
        out[name] = {
            "studies": n_studies, "slices": n_naive,
            "naive_slices_per_s": round(n_naive / t_naive, 1),
            "kit_1_worker_slices_per_s": round(n_one / t_one, 1),
            "kit_slices_per_s": round(n_all / t_all, 1),
            "speedup_1_worker": round(t_naive / t_one, 2),
            "speedup": round(t_naive / t_all, 2),
            "naive_s": round(t_naive, 3),
            "kit_1_worker_parts_s": {k: round(v, 3) for k, v in parts_one.items()},
            "kit_parts_s": {k: round(v, 3) for k, v in parts_all.items()},
            "volumes_only_speedup": round(t_naive / parts_all["volumes_s"], 2),
        }  # fmt: skip
    out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return out
