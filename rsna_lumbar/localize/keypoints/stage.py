"""The ``localize`` stage: out-of-fold training + metrics (``train``), or prediction (``test``).

Output CSV columns (:data:`rsna_lumbar.points.LOCALISED_COLUMNS`, written by
:func:`rsna_lumbar.points.write_points`): ``train_label_coordinates.csv``'s
``study_id, series_id, instance_number, condition, level, x, y`` (same spellings) plus
``world_x, world_y, world_z`` (LPS mm), ``source`` and ``confidence``.

Metrics (:func:`evaluate`, against the label coordinates turned into world points through the
labelled series' geometry): per family (spinal, foraminal, subarticular) the median and 95th
percentile of the 3-D error in mm, coverage, and level accuracy (the predicted point's nearest
true point of the same study and condition carries the same level); and the axial-slice
disagreement rate (how often the axial slice registered from the predicted canal point differs
from the one registered from the true canal point); and ``view_errors``, the error split per
crop view into in-plane mm and through-plane slices (:mod:`.view_errors`), from which training
sizes its jitter (``rsna-lumbar train --jitter-from``).

Real exams (``real``): the five real sagittal T2 exams of ``shared/data/real-lumbar``
(:mod:`.realworld`) are dealt to the folds like studies (exam ``i`` → fold ``i mod n``); each
fold's ``sag_t2`` model trains on the synthetic studies and the real exams outside its fold
(``TrainConfig.extra_fraction`` of each batch real) and is measured on the exams inside it, so
the real figure is out of fold too. It is written to ``model_dir/real.csv`` and under
``"real"`` in the metrics (``"real_tight"``, ``"real_top_cut"``: the same exams framed
otherwise, see :mod:`.realworld`); ``config.json`` records each exam's fold (``"real_folds"``).

Seeds: with ``TrainConfig.seeds`` > 1 each fold trains that many models per task (seeds
``seed`` … ``seed + seeds − 1``), averaged out of fold — synthetic studies and real exams —
as at prediction; ``config.json`` records ``"models_per_fold"``
(:func:`~rsna_lumbar.localize.keypoints.model.fold_members` picks a fold's models).

Level chain (prediction): given a level finder (``Volume -> LevelPoints``, in production
TotalSpineSeg through :func:`rsna_lumbar.localize.tss_level_finder`), each study's sagittal T2
volume goes to it first. When its result is :attr:`~rsna_lumbar.localize.LevelPoints.ok`, the
canal and foraminal rows come from it (:func:`level_rows`, ``source`` = the finder's, e.g.
``"totalspineseg"``) and the learned sagittal models are not run; the subarticular rows still
come from the learned axial model on those canal points. When there is no sagittal T2, the
finder raises, or its result is not ok (a flag such as ``off_by_one`` or ``failed``), the
study gets the learned rows; :class:`LevelSourceLog` logs the first study of each kind of
reason and the counts at the end. A study is never lost to the finder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import torch

from rsna_lumbar.atomic import write_csv, write_text
from rsna_lumbar.devices import choose_device, resolve_device
from rsna_lumbar.dicom.reader import read_stack
from rsna_lumbar.localize.keypoints import predict as P
from rsna_lumbar.localize.keypoints.dataset import TASKS, task_for
from rsna_lumbar.localize.keypoints.model import load_models, save_models
from rsna_lumbar.localize.keypoints.train import (FitJob, TrainConfig, load_samples, read_or_make_folds,
                                                  run_fits, study_stacks)
from rsna_lumbar.localize.keypoints.view_errors import view_errors
from rsna_lumbar.localize.levels import LevelPoints, PointKind
from rsna_lumbar.provenance import write_provenance
from rsna_lumbar.dicom.placement import (
    axial_stacks_by_study, competition_to_world, is_axial_stack, place_in_stack, stack_showing,
)
from rsna_lumbar.points import write_points
from rsna_lumbar.tables import read_label_coordinates
from rsna_lumbar.vocabulary import LEVELS, Condition, SeriesDescription, Side

_LOG = logging.getLogger(__name__)


def _largest(stacks: list, description: str):
    mine = [s for s in stacks if s.description == description]
    return max(mine, key=lambda s: (s.n_slices, -s.series_id)) if mine else None


LevelFinder = Callable[[Any], LevelPoints]
"""``find(volume) -> LevelPoints``: the five levels of a sagittal T2 ``Volume`` (LPS mm)."""

CANAL_BEHIND_DISC_MM = 7.0
"""How far the Spinal Canal Stenosis point lies behind the posterior disc edge, along the disc
centre → posterior edge direction: the competition's point is the centre of the dural sac
behind the disc. On the synthetic set (12 studies, seed 3, scale 4; step-1 and step-2 truth
maps through the TotalSpineSeg parser) the labelled canal point lies 7.3 mm (sd 1.2) behind
the parsed posterior edge along that direction and 1.8 mm off it on average; a real adult
lumbar sac is 12–16 mm deep behind 1–2 mm of epidural space, so its centre sits 7–10 mm
back."""


class LevelSourceLog:
    """Which studies took their levels from the level finder and why the others did not.

    The first study of each kind of reason is logged (warning, with its details); the rest are
    counted, and :meth:`summary` gives the counts for the end of a split.
    """

    def __init__(self) -> None:
        self.used = 0
        self.reasons: Counter[str] = Counter()

    def fell_back(self, study_id, reason: str, detail: str = "") -> None:
        if reason not in self.reasons:
            _LOG.warning("study %s: level finder not used, %s%s; the learned localiser serves "
                         "(further studies with this reason are only counted)", study_id,
                         reason, f" ({detail})" if detail else "")  # fmt: skip
        self.reasons[reason] += 1

    def summary(self) -> str:
        total = self.used + sum(self.reasons.values())
        why = "; ".join(f"{n} × {reason}" for reason, n in self.reasons.most_common())
        used = f"level finder used for {self.used} of {total} studies"
        return f"{used}; learned: {why}" if why else used


def usable_levels(levels: LevelFinder, volume, study_id, log: LevelSourceLog) -> LevelPoints | None:
    """The finder's result for a study's sagittal T2 ``volume`` (None: the study has none) when
    it is :attr:`~rsna_lumbar.localize.LevelPoints.ok`; else None, the reason noted in ``log``."""
    if volume is None:
        log.fell_back(study_id, "no readable Sagittal T2 series")
        return None
    try:
        found = levels(volume)
    except Exception as exc:  # noqa: BLE001 - the learned rows must still come
        log.fell_back(study_id, f"the level finder raised {type(exc).__name__}",
                      (str(exc).splitlines() or [""])[0])
        return None
    if not found.ok:
        flags = ",".join(f.value for f in found.flags) or "incomplete"
        log.fell_back(study_id, f"its result is doubtful ({flags})", "; ".join(found.notes))
        return None
    log.used += 1
    return found


def _placed(world: np.ndarray, stacks: list, home, condition: Condition, level, source: str,
            confidence: float) -> dict:  # fmt: skip
    """A row for world point ``world`` (3,) LPS mm on the stack of ``stacks`` whose slice lies
    nearest to it among those showing it, else on ``home`` (the stack the finder ran on).
    ``world_*`` keep the point itself; ``instance_number, x, y`` are its slice and in-plane
    projection there."""
    found = stack_showing(world, stacks)
    best = found[1] if found is not None else place_in_stack(world[None], home)[0]
    return {"study_id": int(home.study_id), "series_id": int(best.series_id),
            "instance_number": int(best.instance_number), "condition": condition.title,
            "level": level.title, "x": round(best.x, 3), "y": round(best.y, 3),
            "world_x": float(world[0]), "world_y": float(world[1]), "world_z": float(world[2]),
            "source": source, "confidence": round(float(confidence), 4)}  # fmt: skip


def level_rows(found: LevelPoints, t2, t1_stacks: list) -> list[dict]:
    """Spinal Canal Stenosis and Neural Foraminal Narrowing rows (:data:`LOCALISED_COLUMNS`) from
    an ok :class:`LevelPoints` of the sagittal T2 stack ``t2``.

    The canal point is the posterior disc edge moved :data:`CANAL_BEHIND_DISC_MM` further along
    the disc centre → posterior edge direction, on ``t2``; the foramina go on the sagittal T1
    stack (of ``t1_stacks``) nearest to them, else stay on ``t2``. Confidence: the level's
    confidence × the result's.
    """
    centre, edge = found.kind(PointKind.DISC_CENTRE), found.kind(PointKind.DISC_POSTERIOR)
    back = edge - centre
    length = np.maximum(np.linalg.norm(back, axis=1, keepdims=True), 1e-6)
    canal = edge + CANAL_BEHIND_DISC_MM * back / length
    confidence = found.level_confidence * found.confidence
    rows = [_placed(canal[level.index], [t2], t2, Condition.SPINAL_CANAL_STENOSIS, level,
                    found.source, confidence[level.index]) for level in LEVELS]  # fmt: skip
    for side in Side:
        foramina = found.kind(PointKind.foramen(side))
        condition = Condition(f"{side.value}_neural_foraminal_narrowing")
        rows += [_placed(foramina[level.index], t1_stacks, t2, condition, level, found.source,
                         confidence[level.index]) for level in LEVELS]  # fmt: skip
    return rows


def predict_study(models: dict, study_stack_list: list, data: Path,
                  levels: LevelFinder | None = None,
                  log: LevelSourceLog | None = None, decode=read_stack) -> list[dict]:  # fmt: skip
    """All rows (:data:`LOCALISED_COLUMNS`) that can be placed for one study.

    Args:
        models: ``{task: fold models}`` of a localiser folder (tasks may be missing).
        study_stack_list: the study's stacks.
        data: competition folder.
        levels: level finder for the sagittal T2 volume (module docstring): its ok results give
            the canal and foraminal rows; anything else, the learned models.
        log: where fallbacks from ``levels`` are reported (a fresh :class:`LevelSourceLog`
            when None).
        decode: ``decode(stack, data) -> Volume`` (default :func:`read_stack`; ``predict`` passes
            a :class:`~rsna_lumbar.dicom.volume_cache.VolumeCache` reader shared with the crops).
    """
    cache: dict = {}

    def read(stack):
        key = (stack.series_id, stack.stack_index)
        if key not in cache:
            try:
                cache[key] = decode(stack, data)
            except Exception as exc:  # a bad series is skipped, never fatal
                _LOG.warning("study %s series %s unreadable: %s", stack.study_id, stack.series_id, exc)
                cache[key] = None
        return cache[key]

    rows: list[dict] = []
    canal: list[dict] = []
    t2 = _largest(study_stack_list, SeriesDescription.SAGITTAL_T2.value)
    found = None
    if levels is not None:
        study_id = study_stack_list[0].study_id if study_stack_list else None
        volume = read(t2) if t2 is not None else None
        found = usable_levels(levels, volume, study_id, log or LevelSourceLog())
    if found is not None:
        t1_stacks = [s for s in study_stack_list
                     if s.description == SeriesDescription.SAGITTAL_T1.value]
        rows = level_rows(found, t2, t1_stacks)
        canal = [r for r in rows if r["condition"] == Condition.SPINAL_CANAL_STENOSIS.title]
    else:
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


def fit_jobs(fold_of: pd.Series, tasks: tuple[str, ...], cfg: TrainConfig, steps: dict | None,
             real_fold: dict[str, int]) -> list[FitJob]:  # fmt: skip
    """The models of an out-of-fold run, fold by fold, task by task, seed by seed.

    ``fold_of``: study_id → fold; ``real_fold``: real exam → fold index (it trains the
    ``sag_t2`` models of the other folds).
    """
    fold_ids = sorted(fold_of.unique())
    return [FitJob(index, frozenset(fold_of.index[fold_of == fold]), t,
                   replace(cfg, steps=(steps or {}).get(t, cfg.steps), seed=cfg.seed + s),
                   tuple(e for e in real_fold if real_fold[e] != index) if t == "sag_t2" else ())
            for index, fold in enumerate(fold_ids)
            for t in tasks for s in range(cfg.seeds)]  # fmt: skip


def train_oof(data, out, model_dir, *, work="work", folds=None, n_folds=5, cfg=TrainConfig(),
              tasks=tuple(TASKS), workers=None, steps: dict | None = None,
              real: bool | None = None, jobs: int = 1) -> dict:  # fmt: skip
    """Train per fold, predict each fold's studies with the model that did not see them,
    write ``out`` (OOF rows), ``model_dir`` (all fold models, ``provenance.json``: trained on
    ``data``) and the metrics JSON.

    Args:
        steps: training steps per task (``{"sag_t2": 600, ...}``); tasks not named train
            ``cfg.steps``. The budget knob: time is about linear in the steps.
        real: train and measure ``sag_t2`` with the real exams out of fold (module docstring);
            ``None``: when the exams are present and ``sag_t2`` is trained.
        jobs: models trained at once, each in its own process (:func:`.train.run_fits`);
            the models are the same as with 1.
        cfg.device: ``auto`` (CUDA when a GPU passes the smoke test, else the CPU), ``cpu`` or
            ``cuda``, chosen once here for training and the out-of-fold predictions
            (:func:`.train.fit`); ``config.json`` records the device that trained.

    Resuming: each model is saved to ``.{model_dir name}.partial`` next to ``model_dir`` as
    soon as it is trained; a run stopped part-way and started again with the same settings and
    data loads those instead of training them again. The folder is removed once ``model_dir``
    is written.

    Memory: each training series' canonical stack is written to ``WORK/localiser_samples`` as
    it is made and memory-mapped from there (:meth:`.dataset.SeriesSample.on_disk`): the jobs'
    processes share one copy through the page cache, and the split's stacks (about 6 GB for
    2,000 studies at the default grids) need not fit in memory. Removed at the end.
    """
    from rsna_lumbar.localize.keypoints import realworld

    choice = choose_device(cfg.device)
    _LOG.info("localiser device: %s (%s)", choice.device, choice.note)
    cfg = replace(cfg, device=choice.device.type)
    data = Path(data)
    stacks = study_stacks(data, "train", work, workers)
    coords = read_label_coordinates(data / "train_label_coordinates.csv")
    fold_of = read_or_make_folds(data, Path(folds) if folds else None, n_folds).set_index("study_id").fold
    store = Path(work) / "localiser_samples"  # the training stacks, memory-mapped (scratch)
    samples = {t: load_samples(data, task_for(t, cfg), coords, stacks, store / t) for t in tasks}
    by_study = _by_study(stacks)
    fold_ids = sorted(fold_of.unique())
    exams = realworld.real_exams() if real or real is None else []
    if "sag_t2" not in tasks:
        exams = []
    if real and not exams:
        msg = "real=True but no real exams found (set RSNA_REAL_LUMBAR) or sag_t2 not trained"
        raise FileNotFoundError(msg)
    real_fold = {path.stem: i % len(fold_ids) for i, path in enumerate(exams)}
    real_samples = {path.stem: realworld.real_sample(path, task_for("sag_t2", cfg)) for path in exams}
    models: dict[str, list] = {t: [] for t in tasks}
    rows, real_rows, started = [], [], time.time()
    fits = fit_jobs(fold_of, tasks, cfg, steps, real_fold)
    resume = Path(model_dir).parent / f".{Path(model_dir).name}.partial"  # models as they finish
    trained = list(zip(fits, run_fits(fits, samples, real_samples, jobs, resume)))
    for index, fold in enumerate(fold_ids):
        held = set(fold_of.index[fold_of == fold])
        fold_models = {t: [m.to(choice.device) for job, m in trained
                           if job.fold == index and job.task == t] for t in tasks}  # fmt: skip
        for t in tasks:
            models[t] += fold_models[t]
        with torch.no_grad():
            for study in sorted(held):
                rows += predict_study(fold_models, by_study.get(int(study), []), data)
            for path in exams:
                if real_fold[path.stem] == index:
                    for framing in realworld.FRAMINGS:
                        result = realworld.measure_exam(fold_models["sag_t2"], path, framing)
                        real_rows.append(result.assign(fold=index))
        _LOG.info("fold %s done (%.0f s)", fold, time.time() - started)
    table = write_points(rows, out)
    config = {"backbone": cfg.backbone, "width": cfg.width, "tasks": {t: task_for(t, cfg).as_config() for t in tasks},
              "train": asdict(cfg), "steps": steps or {}, "folds": int(fold_of.nunique()),
              "models_per_fold": cfg.seeds, "real_folds": real_fold}  # fmt: skip
    save_models(model_dir, config, models)
    write_provenance(model_dir, data, f"localize {cfg.backbone}: {int(fold_of.nunique())} folds, "
                     f"steps {steps or cfg.steps}, {len(exams)} real exams (config.json)")
    shutil.rmtree(resume, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    metrics = evaluate(table, coords, stacks)
    if real_rows:
        real_table = pd.concat(real_rows, ignore_index=True)
        write_csv(real_table, Path(model_dir) / "real.csv")
        for framing, part in real_table.groupby("framing"):
            metrics["real" if framing == "acquired" else f"real_{framing}"] = realworld.summarise(part)
    metrics["train_seconds"] = round(time.time() - started, 1)
    text = json.dumps(metrics, indent=2) + "\n"
    write_text(Path(out).with_suffix(".metrics.json"), text)
    write_text(Path(model_dir) / "metrics.json", text)
    return metrics


def predict_split(data, split, out, model_dir, *, work="work", workers=None,
                  levels: LevelFinder | None = None, studies=None,
                  models_per_task: int | None = None, volumes=None, index=None,
                  device: str | torch.device = "auto") -> pd.DataFrame:  # fmt: skip
    """Predict every study of ``split`` with a trained localiser folder; write ``out``.

    ``levels``: a level finder tried first on each study's sagittal T2 (module docstring), e.g.
    :func:`rsna_lumbar.localize.tss_level_finder`; None: the learned models only.
    ``studies``: only these study ids (default: all of the split).
    ``models_per_task``: average only the first that many models of each task (default: all;
    ``predict`` lowers it to honour a time budget).
    ``volumes``: a :class:`~rsna_lumbar.dicom.volume_cache.VolumeCache` the decoded stacks go
    through (``predict`` shares it with the crops stage).
    ``index``: the split's header index, already read (``predict`` reads it once per run);
    default: built or reused in ``work``.
    ``device``: ``auto`` (CUDA when a GPU passes the smoke test), ``cpu``, ``cuda`` or a
    ``torch.device`` already chosen; on CUDA the heatmaps are computed under autocast.
    """
    device = resolve_device(device)
    config, models = load_models(model_dir)
    keep = None if models_per_task is None else max(models_per_task, 1)
    models = {task: [m.to(device) for m in task_models[:keep]]
              for task, task_models in models.items()}  # fmt: skip
    wanted = None if studies is None else {int(s) for s in studies}
    if index is not None and wanted is not None:
        index = index[index.study_id.isin(wanted)]
    stacks = study_stacks(data, split, work, workers, index)
    rows, log = [], LevelSourceLog()
    with torch.no_grad():
        for study, study_stacks_ in sorted(_by_study(stacks).items()):
            if wanted is None or study in wanted:
                rows += predict_study(models, study_stacks_, Path(data), levels, log,
                                      volumes.read if volumes is not None else read_stack)
    if levels is not None:
        _LOG.info("%s", log.summary())
    return write_points(rows, out)


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
    axial = axial_stacks_by_study(stacks)
    scs = merged[merged.condition == Condition.SPINAL_CANAL_STENOSIS.title].dropna(subset=["world_x", "tx"])
    differ = total = 0
    for row in scs.itertuples():
        picks = []
        for point in ([row.tx, row.ty, row.tz], [row.world_x, row.world_y, row.world_z]):
            found = stack_showing(np.array(point), axial.get(row.study_id, []))
            picks.append(None if found is None else (found[1].series_id, found[1].instance_number))
        if picks[0] is None:
            continue
        total += 1
        differ += picks[0] != picks[1]
    return {"n": total, "rate": round(differ / total, 4) if total else None}
