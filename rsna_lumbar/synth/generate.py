"""``rsna-lumbar synth``: write a synthetic competition folder with known truth.

Layout written under ``out`` (the real Kaggle layout, ``docs/competition.md``, plus ``truth/``)::

    train.csv, train_label_coordinates.csv, train_series_descriptions.csv,
    test_series_descriptions.csv, sample_submission.csv,
    {train,test}_images/{study_id}/{series_id}/{instance_number}.dcm,
    truth/manifest.json              arguments, counts, version
    truth/points.csv                 world points (LPS mm) of each level's structures
    truth/latent.csv                 latent severity per study and target column
    truth/bayes_{train,test}.csv     Bayes-optimal probabilities (submission format)
    truth/test_labels.csv            labels of the test split (train.csv format)
    truth/series.csv                 per series: description, sequence, stacks, TSS file
    truth/totalspineseg/step{1,2}_output/{study_id}_{series_id}.nii.gz

Studies are independent: study ``i`` draws everything from ``np.random.default_rng([seed, i])``
(ids come from the master generator), so the output is byte-identical for a seed whatever the
number of worker processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsna_lumbar.atomic import write_csv, write_text
from rsna_lumbar.parallel import ordered_map
from rsna_lumbar.synth import severity
from rsna_lumbar.synth.anatomy import sample_spine
from rsna_lumbar.synth.dicom_writer import write_series
from rsna_lumbar.synth.landmarks import STRUCTURES, level_points, project
from rsna_lumbar.synth.series import number_instances, plan_axial, plan_sagittal, render_stack
from rsna_lumbar.synth.truth import write_label_maps
from rsna_lumbar.vocabulary import (
    CONDITIONS, LEVELS, PROBABILITY_COLUMNS, SEVERITIES, TARGET_COLUMNS, Family,
    SeriesDescription, row_id, study_row_ids,
)

log = logging.getLogger(__name__)
VERSION = 8
_POINT_OF = {Family.SPINAL: "canal", Family.FORAMINAL: "foramen", Family.SUBARTICULAR: "recess"}


@dataclass(frozen=True)
class StudyJob:
    index: int
    study_id: int
    series_ids: tuple[int, ...]
    split: str
    out: str
    seed: int
    scale: float


def _condition_point(condition) -> str:
    kind = _POINT_OF[condition.family]
    return kind if condition.side is None else f"{condition.side.value}_{kind}"


def make_study(job: StudyJob) -> dict:
    """Generate, render and write one study; returns its table rows (no shared state).

    Runs single-threaded (OpenCV and BLAS): studies are the unit of parallel work, and
    multi-threaded small matrix products only contend with the other workers.
    """
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    with threadpool_limits(limits=1):
        return _make_study(job)


def _make_study(job: StudyJob) -> dict:
    rng = np.random.default_rng([job.seed, job.index])
    latent = severity.sample_latent(rng)
    spine = sample_spine(rng, latent, severity.degeneration_from_latent(latent))
    covered = [lv for lv in range(5) if rng.random() >= severity.AXIAL_MISSING[lv]]
    if 0 not in covered and 1 in covered and rng.random() < 0.5:
        covered.remove(1)
    covered = covered or [3]
    ids = iter(job.series_ids)
    t2_sequence = "STIR" if rng.random() < 0.15 else "T2"
    plans = [
        plan_sagittal(rng, spine, next(ids), SeriesDescription.SAGITTAL_T1, "T1", job.scale),
        plan_sagittal(rng, spine, next(ids), SeriesDescription.SAGITTAL_T2, t2_sequence, job.scale),
    ]
    plans += plan_axial(rng, spine, [next(ids), next(ids)], covered, job.scale)
    plans = [plans[i] for i in rng.permutation(len(plans))]  # series ids carry no order
    root = Path(job.out)
    images = root / f"{job.split}_images" / str(job.study_id)
    series_rows = []
    for number, plan in enumerate(plans, start=1):
        number_instances(rng, plan)
        rendered = [render_stack(rng, spine, st, plan.sequence, plan.description.is_sagittal)
                    for st in plan.stacks]
        write_series(images / str(plan.series_id), plan, [p for p, _ in rendered], job.study_id,
                     job.seed, number, rescale=bool(rng.random() < 0.3))
        tss = ""
        if plan.description.is_sagittal:
            tss = write_label_maps(root / "truth", f"{job.study_id}_{plan.series_id}",
                                   plan.stacks[0], rendered[0][1])
        series_rows.append({"study_id": job.study_id, "series_id": plan.series_id,
                            "series_description": plan.description.value,
                            "sequence": plan.sequence, "stacks": len(plan.stacks),
                            "slices": sum(len(s.positions) for s in plan.stacks), "tss_file": tss})
    grades = severity.draw_grades(rng, latent).astype(float)
    probs = severity.bayes_probabilities(latent)
    points = {lv: level_points(spine, lv) for lv in range(5)}
    by_desc = {}
    for plan in plans:
        by_desc.setdefault(plan.description, []).append(plan)
    coords = []
    for c, condition in enumerate(CONDITIONS):
        for lv, level in enumerate(LEVELS):
            if rng.random() < severity.MISSING_RATE[c]:
                grades[c, lv] = np.nan
                continue
            candidates = by_desc.get(condition.annotated_on, [])
            best = None
            for plan in candidates:
                hit = project(plan.stacks, points[lv][_condition_point(condition)])
                if hit is not None and (best is None or abs(hit[5]) < abs(best[1][5])):
                    best = (plan, hit)
            spacing = best[0].stacks[best[1][0]].spacing if best else 0.0
            if best is None or abs(best[1][5]) > spacing / 2 + 0.5:
                grades[c, lv] = np.nan  # the series never shows this level
                continue
            plan, (_, _, inst, x, y, _) = best
            coords.append({"study_id": job.study_id, "series_id": plan.series_id,
                           "instance_number": inst, "condition": condition.title,
                           "level": level.title, "x": round(x, 6), "y": round(y, 6)})
    labels = {"study_id": job.study_id}
    for c, condition in enumerate(CONDITIONS):
        for lv, level in enumerate(LEVELS):
            g = grades[c, lv]
            labels[f"{condition.value}_{level.value}"] = None if np.isnan(g) else SEVERITIES[int(g)].value
    bayes = [
        {"row_id": row_id(job.study_id, condition, level),
         **dict(zip(PROBABILITY_COLUMNS, probs[c, lv].round(8)))}
        for c, condition in enumerate(CONDITIONS) for lv, level in enumerate(LEVELS)
    ]
    point_rows = [
        {"study_id": job.study_id, "split": job.split, "level": LEVELS[lv].title, "structure": name,
         "world_x": p[0], "world_y": p[1], "world_z": p[2]}
        for lv in range(5) for name in STRUCTURES for p in [points[lv][name]]
    ]
    latent_row = {"study_id": job.study_id, **dict(zip(TARGET_COLUMNS, latent.reshape(-1).round(6)))}
    return {"split": job.split, "labels": labels, "coords": coords, "series": series_rows,
            "bayes": bayes, "points": point_rows, "latent": latent_row}


def _ids(rng: np.random.Generator, n: int, taken: set[int]) -> list[int]:
    out = []
    while len(out) < n:
        v = int(rng.integers(1_000_000, 4_290_000_000))
        if v not in taken:
            taken.add(v)
            out.append(v)
    return out


def plan_jobs(out: Path, studies: int, test_studies: int, seed: int, scale: float) -> list[StudyJob]:
    rng = np.random.default_rng(seed)
    taken: set[int] = set()
    jobs = []
    for i in range(studies + test_studies):
        split = "train" if i < studies else "test"
        jobs.append(StudyJob(i, _ids(rng, 1, taken)[0], tuple(_ids(rng, 4, taken)), split,
                             str(out), seed, scale))
    return jobs


_OUTPUTS = ("train_images", "test_images", "truth", "train.csv", "train_label_coordinates.csv",
            "train_series_descriptions.csv", "test_series_descriptions.csv", "sample_submission.csv")


def set_arguments(studies: int, seed: int, test_studies: int | None = None,
                  scale: float = 1.0) -> dict:
    """The arguments a synthetic set is made from, as ``truth/manifest.json`` records them (with
    the generator's :data:`VERSION`): the same arguments give the same bytes."""
    test_studies = max(1, studies // 5) if test_studies is None else test_studies
    return {"studies": studies, "test_studies": test_studies, "seed": seed, "scale": scale,
            "version": VERSION}


def recorded_arguments(out: str | os.PathLike) -> dict | None:
    """The :func:`set_arguments` a folder was generated with (None: no synthetic set there)."""
    manifest = Path(out) / "truth" / "manifest.json"
    return json.loads(manifest.read_text()).get("args") if manifest.is_file() else None


def generate(out: Path, studies: int, seed: int, test_studies: int | None = None,
             workers: int | None = None, scale: float = 1.0, force: bool = False,
             progress: bool = True) -> Path:
    """Write the folder (see module docstring); returns ``out``. Skips if the same arguments
    already produced it; ``force`` rewrites. ``workers`` processes (default: every core) render
    the studies; ``progress`` shows a bar."""
    out = Path(out)
    args = set_arguments(studies, seed, test_studies, scale)
    test_studies = args["test_studies"]
    manifest = out / "truth" / "manifest.json"
    if not force and recorded_arguments(out) == args:
        log.info("%s already holds this synthetic set; --force to rewrite", out)
        return out
    for name in _OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(out, studies, test_studies, seed, scale)
    results = list(ordered_map(make_study, jobs, workers=workers, desc="synth", unit="study",
                               progress=progress))
    _write_tables(out, results)
    counts = {"train": studies, "test": test_studies,
              "series": sum(len(r["series"]) for r in results),
              "coordinates": sum(len(r["coords"]) for r in results)}
    write_text(manifest, json.dumps({"args": args, "counts": counts}, indent=2) + "\n")
    return out


def _write_tables(out: Path, results: list[dict]) -> None:
    import pandas as pd  # here, not at the top: workers never need it (faster start)

    train = [r for r in results if r["split"] == "train"]
    test = [r for r in results if r["split"] == "test"]
    label_columns = ["study_id", *TARGET_COLUMNS]
    frame = pd.DataFrame([r["labels"] for r in train], columns=label_columns).sort_values("study_id")
    write_csv(frame, out / "train.csv")
    coords = pd.DataFrame([c for r in train for c in r["coords"]],
                          columns=["study_id", "series_id", "instance_number", "condition", "level",
                                   "x", "y"])
    write_csv(coords.sort_values(["study_id", "series_id", "condition", "level"], kind="stable"),
              out / "train_label_coordinates.csv")
    for split, rows in (("train", train), ("test", test)):
        series = pd.DataFrame([s for r in rows for s in r["series"]])
        desc = series[["study_id", "series_id", "series_description"]] if len(series) else pd.DataFrame(
            columns=["study_id", "series_id", "series_description"])
        write_csv(desc.sort_values(["study_id", "series_id"]), out / f"{split}_series_descriptions.csv")
        write_csv(series.assign(split=split), out / "truth" / f"series_{split}.csv")
        bayes = pd.DataFrame([b for r in rows for b in r["bayes"]])
        write_csv(bayes, out / "truth" / f"bayes_{split}.csv", float_format="%.8f")
    sample = pd.DataFrame({"row_id": [rid for r in test for rid in study_row_ids(r["labels"]["study_id"])]})
    for col in PROBABILITY_COLUMNS:
        sample[col] = 1.0 / 3.0
    write_csv(sample, out / "sample_submission.csv", float_format="%.6f")
    write_csv(pd.DataFrame([r["labels"] for r in test], columns=label_columns).sort_values("study_id"),
              out / "truth" / "test_labels.csv")
    write_csv(pd.DataFrame([p for r in results for p in r["points"]]), out / "truth" / "points.csv",
              float_format="%.4f")
    write_csv(pd.DataFrame([r["latent"] for r in results]), out / "truth" / "latent.csv")
