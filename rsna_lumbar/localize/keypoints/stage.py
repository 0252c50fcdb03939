"""The ``localize`` stage: out-of-fold training + metrics (``train``), or prediction (``test``).

Output CSV columns (:data:`OUTPUT_COLUMNS`): ``train_label_coordinates.csv``'s
``study_id, series_id, instance_number, condition, level, x, y`` (same spellings) plus
``world_x, world_y, world_z`` (LPS mm), ``source`` and ``confidence``.

Metrics (:func:`evaluate`, against the label coordinates turned into world points through the
labelled series' geometry): per family (spinal, foraminal, subarticular) the median and 95th
percentile of the 3-D error in mm, coverage, and level accuracy (the predicted point's nearest
true point of the same study and condition carries the same level); and the axial-slice
disagreement rate (how often the axial slice registered from the predicted canal point differs
from the one registered from the true canal point).

Real exams (``real``): the five real sagittal T2 exams of ``shared/data/real-lumbar``
(:mod:`.realworld`) are dealt to the folds like studies (exam ``i`` → fold ``i mod n``); each
fold's ``sag_t2`` model trains on the synthetic studies and the real exams outside its fold
(``TrainConfig.extra_fraction`` of each batch real) and is measured on the exams inside it, so
the real figure is out of fold too. It is written to ``model_dir/real.csv`` and under
``"real"`` in the metrics; ``config.json`` records each exam's fold (``"real_folds"``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from rsna_lumbar.atomic import write_csv, write_text
from rsna_lumbar.dicom.reader import read_stack
from rsna_lumbar.localize.keypoints import predict as P
from rsna_lumbar.localize.keypoints.dataset import TASKS
from rsna_lumbar.localize.keypoints.model import load_models, save_models
from rsna_lumbar.localize.keypoints.train import TrainConfig, fit, load_samples, read_or_make_folds, study_stacks
from rsna_lumbar.localize.keypoints.view_errors import view_errors
from rsna_lumbar.registration import choose, competition_to_world, is_axial_stack, place_in_stack
from rsna_lumbar.tables import read_label_coordinates
from rsna_lumbar.vocabulary import Condition, SeriesDescription

_LOG = logging.getLogger(__name__)
OUTPUT_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y",
                  "world_x", "world_y", "world_z", "source", "confidence")  # fmt: skip


def _largest(stacks: list, description: str):
    mine = [s for s in stacks if s.description == description]
    return max(mine, key=lambda s: (s.n_slices, -s.series_id)) if mine else None


def predict_study(models: dict, study_stack_list: list, data: Path) -> list[dict]:
    """All rows the available models can place for one study (``study_stack_list``: its stacks)."""
    cache: dict = {}

    def read(stack):
        key = (stack.series_id, stack.stack_index)
        if key not in cache:
            try:
                cache[key] = read_stack(stack, data)
            except Exception as exc:  # a bad series is skipped, never fatal
                _LOG.warning("study %s series %s unreadable: %s", stack.study_id, stack.series_id, exc)
                cache[key] = None
        return cache[key]

    rows: list[dict] = []
    canal: list[dict] = []
    t2 = _largest(study_stack_list, SeriesDescription.SAGITTAL_T2.value)
    if "sag_t2" in models and t2 is not None and read(t2) is not None:
        canal = P.canal_points(models["sag_t2"], read(t2))
        rows += canal
    t1 = _largest(study_stack_list, SeriesDescription.SAGITTAL_T1.value)
    if "sag_t1" in models and t1 is not None and read(t1) is not None:
        midline = float(np.median([r["world_x"] for r in canal])) if canal else None
        rows += P.foramen_points(models["sag_t1"], read(t1), midline)
    axial = [s for s in study_stack_list if is_axial_stack(s)]
    if "axial" in models and canal and axial:
        rows += P.subarticular_points(models["axial"], canal, axial, read)
    return rows


def _by_study(stacks: dict) -> dict[int, list]:
    out: dict[int, list] = {}
    for (study, _), series_stacks in stacks.items():
        out.setdefault(study, []).extend(series_stacks)
    return out


def train_oof(data, out, model_dir, *, work="work", folds=None, n_folds=5, cfg=TrainConfig(),
              tasks=tuple(TASKS), workers=None, steps: dict | None = None,
              real: bool | None = None) -> dict:  # fmt: skip
    """Train per fold, predict each fold's studies with the model that did not see them,
    write ``out`` (OOF rows), ``model_dir`` (all fold models) and the metrics JSON.

    Args:
        steps: training steps per task (``{"sag_t2": 600, ...}``); tasks not named train
            ``cfg.steps``. The budget knob: time is about linear in the steps.
        real: train and measure ``sag_t2`` with the real exams out of fold (module docstring);
            ``None``: when the exams are present and ``sag_t2`` is trained.
    """
    import torch

    from rsna_lumbar.localize.keypoints import realworld

    data = Path(data)
    stacks = study_stacks(data, "train", work, workers)
    coords = read_label_coordinates(data / "train_label_coordinates.csv")
    fold_of = read_or_make_folds(data, Path(folds) if folds else None, n_folds).set_index("study_id").fold
    samples = {t: load_samples(data, TASKS[t], coords, stacks) for t in tasks}
    by_study = _by_study(stacks)
    fold_ids = sorted(fold_of.unique())
    exams = realworld.real_exams() if real or real is None else []
    if "sag_t2" not in tasks:
        exams = []
    if real and not exams:
        msg = "real=True but no real exams found (set RSNA_REAL_LUMBAR) or sag_t2 not trained"
        raise FileNotFoundError(msg)
    real_fold = {path.stem: i % len(fold_ids) for i, path in enumerate(exams)}
    real_samples = {path.stem: realworld.real_sample(path) for path in exams}
    models: dict[str, list] = {t: [] for t in tasks}
    rows, real_rows, started = [], [], time.time()
    for index, fold in enumerate(fold_ids):
        held = set(fold_of.index[fold_of == fold])
        fold_models = {}
        for t in tasks:
            train = [s for s in samples[t] if s.study_id not in held]
            extra = [real_samples[e] for e in real_samples if real_fold[e] != index] if t == "sag_t2" else []
            task_cfg = replace(cfg, steps=(steps or {}).get(t, cfg.steps))
            fold_models[t] = [fit(train, TASKS[t], task_cfg, extra=extra)]
            models[t].append(fold_models[t][0])
        with torch.no_grad():
            for study in sorted(held):
                rows += predict_study(fold_models, by_study.get(int(study), []), data)
            for path in exams:
                if real_fold[path.stem] == index:
                    result = realworld.measure_exam(fold_models["sag_t2"], path)
                    real_rows.append(result.assign(fold=index))
        _LOG.info("fold %s done (%.0f s)", fold, time.time() - started)
    table = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
    write_csv(table, out)
    config = {"backbone": cfg.backbone, "width": cfg.width, "tasks": {t: TASKS[t].as_config() for t in tasks},
              "train": asdict(cfg), "steps": steps or {}, "folds": int(fold_of.nunique()),
              "real_folds": real_fold}  # fmt: skip
    save_models(model_dir, config, models)
    metrics = evaluate(table, coords, stacks)
    if real_rows:
        real_table = pd.concat(real_rows, ignore_index=True)
        write_csv(real_table, Path(model_dir) / "real.csv")
        metrics["real"] = realworld.summarise(real_table)
    metrics["train_seconds"] = round(time.time() - started, 1)
    text = json.dumps(metrics, indent=2) + "\n"
    write_text(Path(out).with_suffix(".metrics.json"), text)
    write_text(Path(model_dir) / "metrics.json", text)
    return metrics


def predict_split(data, split, out, model_dir, *, work="work", workers=None) -> pd.DataFrame:
    """Predict every study of ``split`` with a trained localiser folder; write ``out``."""
    import torch

    config, models = load_models(model_dir)
    stacks = study_stacks(data, split, work, workers)
    rows = []
    with torch.no_grad():
        for study, study_stacks_ in sorted(_by_study(stacks).items()):
            rows += predict_study(models, study_stacks_, Path(data))
    table = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
    write_csv(table, out)
    return table


def _world_truth(coords: pd.DataFrame, stacks: dict) -> pd.DataFrame:
    worlds = []
    for row in coords.itertuples():
        try:
            worlds.append(competition_to_world(stacks.get((row.study_id, row.series_id), []),
                                               int(row.instance_number), row.x, row.y))  # fmt: skip
        except ValueError:
            worlds.append(np.full(3, np.nan))
    return coords.assign(**dict(zip(("tx", "ty", "tz"), np.array(worlds).reshape(-1, 3).T)))


def evaluate(pred: pd.DataFrame, coords: pd.DataFrame, stacks: dict) -> dict:
    """Metrics of predicted rows against label coordinates (see module docstring)."""
    truth = _world_truth(coords[coords.study_id.isin(pred.study_id.unique())], stacks)
    truth["family"] = truth.condition.map(lambda c: Condition.from_title(c).family.value)
    merged = truth.merge(pred, on=["study_id", "condition", "level"], how="left", suffixes=("_t", ""))
    merged["error_mm"] = np.linalg.norm(merged[["world_x", "world_y", "world_z"]].to_numpy(float)
                                        - merged[["tx", "ty", "tz"]].to_numpy(float), axis=1)  # fmt: skip
    out: dict = {"studies": int(pred.study_id.nunique())}
    for family, group in merged.groupby("family"):
        err = group.error_mm.dropna()
        level_ok = []
        for row in group.dropna(subset=["world_x"]).itertuples():
            same = truth[(truth.study_id == row.study_id) & (truth.condition == row.condition)]
            d = np.linalg.norm(same[["tx", "ty", "tz"]].to_numpy(float)
                               - [row.world_x, row.world_y, row.world_z], axis=1)  # fmt: skip
            level_ok.append(same.level.iloc[int(np.nanargmin(d))] == row.level)
        out[family] = {"n_true": len(group), "coverage": round(len(err) / max(len(group), 1), 4),
                       "median_mm": round(float(err.median()), 2) if len(err) else None,
                       "p95_mm": round(float(err.quantile(0.95)), 2) if len(err) else None,
                       "level_accuracy": round(float(np.mean(level_ok)), 4) if level_ok else None}  # fmt: skip
    out["axial_slice_disagreement"] = axial_disagreement(merged, stacks)
    out["view_errors"] = view_errors(merged, stacks)
    return out


def axial_disagreement(merged: pd.DataFrame, stacks: dict) -> dict:
    """How often the axial slice registered from the predicted canal point differs from the one
    registered from the true canal point (over (study, level) with both points)."""
    axial = {}
    for (study, _), series_stacks in stacks.items():
        axial.setdefault(study, []).extend(s for s in series_stacks if is_axial_stack(s))
    scs = merged[merged.condition == Condition.SPINAL_CANAL_STENOSIS.title].dropna(subset=["world_x", "tx"])
    differ = total = 0
    for row in scs.itertuples():
        picks = []
        for point in ([row.tx, row.ty, row.tz], [row.world_x, row.world_y, row.world_z]):
            best = choose([place_in_stack(np.array([point]), s)[0] for s in axial.get(row.study_id, [])])
            picks.append(None if best is None else (best.series_id, best.instance_number))
        if picks[0] is None:
            continue
        total += 1
        differ += picks[0] != picks[1]
    return {"n": total, "rate": round(differ / total, 4) if total else None}
