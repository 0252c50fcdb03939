"""The localise stage: every study's label points, one chain (:func:`predict_split`).

Output CSV columns (:data:`rsna_lumbar.points.LOCALISED_COLUMNS`, written by
:func:`rsna_lumbar.points.write_points`): ``train_label_coordinates.csv``'s
``study_id, series_id, instance_number, condition, level, x, y`` (same spellings) plus
``world_x, world_y, world_z`` (LPS mm), ``source`` and ``confidence``.

Level chain: given a level finder (``Volume -> LevelPoints``, in production TotalSpineSeg
through :func:`rsna_lumbar.localize.tss_level_finder`), each study's sagittal T2 volume goes to
it first. When its result is :attr:`~rsna_lumbar.localize.LevelPoints.ok`, the canal and
foraminal rows come from it (:func:`level_rows`, ``source`` = the finder's, e.g.
``"totalspineseg"``) and the learned sagittal models are not run; the subarticular rows still
come from the learned axial model on those canal points. When there is no sagittal T2, the
finder raises, or its result is not ok (a flag such as ``off_by_one`` or ``failed``), the
study gets the learned rows (:mod:`rsna_lumbar.localize.keypoints.predict`);
:class:`LevelSourceLog` logs the first study of each kind of reason and the counts at the end.
A study is never lost to the finder. Without a finder every row is the learned models'.

Training the learned models out of fold: :mod:`rsna_lumbar.localize.oof`; the metrics:
:mod:`rsna_lumbar.localize.evaluate`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rsna_lumbar.devices import resolve_device
from rsna_lumbar.dicom.placement import is_axial_stack, place_in_stack, stack_showing
from rsna_lumbar.dicom.reader import read_stack
from rsna_lumbar.localize.keypoints import predict as P
from rsna_lumbar.localize.keypoints.model import load_models
from rsna_lumbar.localize.keypoints.train import study_stacks
from rsna_lumbar.localize.levels import LevelPoints, PointKind
from rsna_lumbar.points import write_points
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
                  log: LevelSourceLog | None = None, decode=read_stack,
                  decoding: P.Decoding = P.DECODING) -> list[dict]:  # fmt: skip
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
        decoding: how the learned models' heatmaps become points (:class:`~.keypoints.predict.Decoding`).
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
            canal = P.canal_points(models["sag_t2"], read(t2), decoding=decoding)
            rows += canal
        t1 = _largest(study_stack_list, SeriesDescription.SAGITTAL_T1.value)
        if "sag_t1" in models and t1 is not None and read(t1) is not None:
            rows += P.foramen_points(models["sag_t1"], read(t1), canal, decoding)
    axial = [s for s in study_stack_list if is_axial_stack(s)]
    if "axial" in models and canal and axial:
        rows += P.subarticular_points(models["axial"], canal, axial, read, decoding)
    return rows


def stacks_by_study(stacks: dict) -> dict[int, list]:
    """``{study_id: [Stack, ...]}`` from the ``{(study_id, series_id): [Stack, ...]}`` of
    :func:`~rsna_lumbar.localize.keypoints.train.study_stacks`."""
    out: dict[int, list] = {}
    for (study, _), series_stacks in stacks.items():
        out.setdefault(study, []).extend(series_stacks)
    return out


def predict_split(data, split, out, model_dir, *, work="work", workers=None,
                  levels: LevelFinder | None = None, studies=None,
                  models_per_task: int | None = None, volumes=None, index=None,
                  device: str | torch.device = "auto",
                  decoding: P.Decoding = P.DECODING) -> pd.DataFrame:  # fmt: skip
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
    ``decoding``: how heatmaps become points (:class:`~.keypoints.predict.Decoding`).
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
        for study, study_stacks_ in sorted(stacks_by_study(stacks).items()):
            if wanted is None or study in wanted:
                rows += predict_study(models, study_stacks_, Path(data), levels, log,
                                      volumes.read if volumes is not None else read_stack,
                                      decoding)  # fmt: skip
    if levels is not None:
        _LOG.info("%s", log.summary())
    return write_points(rows, out)
