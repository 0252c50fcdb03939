"""``predict``: every study of a split → 25 rows of probabilities, never a missing row.

The chain, each stage guarded so that a failure degrades the prediction instead of the run:

1. studies — from ``{split}_series_descriptions.csv`` (the list Kaggle scores);
2. points — the ensemble's learned localiser (``rsna-lumbar localize``), after TotalSpineSeg
   when a runner is given (its ok levels give the canal and foraminal points, see
   :mod:`rsna_lumbar.localize.keypoints.stage`), or the labelled points when the split has them
   (train: out-of-fold checks), else none;
3. crops — :func:`rsna_lumbar.crops.stage.build_crops` on those points: DICOM decoding and
   resampling run in a process pool across studies;
4. models — as studies' crops land, every member of the ensemble manifest
   (:mod:`rsna_lumbar.inference.ensemble`) predicts them in batches of 8 studies in this process
   (GPU when there is one) while the pool decodes the next studies; weighted average of
   calibrated probabilities, targets a member cannot predict left out;
5. fallback — what no member predicted gets the class priors of ``MODELS/priors.json`` (uniform
   when absent); the count is logged;
6. a validated, atomically written submission.

Time budget: by default Kaggle's 9 h less a 30 min margin. After each batch the seconds spent
plus the measured per-study cost of the kept members times the studies left are projected;
when that passes the budget the last member of the manifest is shed (logged), never a row.
Seconds per study for every stage are logged at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rsna_lumbar.inference.ensemble import read_ensemble
from rsna_lumbar.layout import CompetitionFolder
from rsna_lumbar.priors import load_priors, uniform_priors
from rsna_lumbar.submission import build_submission, write_submission
from rsna_lumbar.tables import split_study_ids

if TYPE_CHECKING:
    from rsna_lumbar.localize import TotalSpineSeg

LOGGER = logging.getLogger(__name__)
PRIORS_FILE = "priors.json"
KAGGLE_BUDGET_S = 9 * 3600 - 30 * 60


def fallback_priors(models: str | os.PathLike | None) -> np.ndarray:
    """(25, 3) priors from ``models/priors.json``, else uniform; the choice is logged."""
    path = Path(models) / PRIORS_FILE if models is not None else None
    if path is not None and path.is_file():
        LOGGER.info("fallback probabilities: class priors from %s", path)
        return load_priors(path)
    LOGGER.warning("no %s in %s: the fallback is uniform probabilities", PRIORS_FILE, models)
    return uniform_priors()


class _Stages:
    """Wall time per stage, reported per study."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def run(self, name: str, function, *args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def report(self, n_studies: int) -> str:
        return ", ".join(f"{k} {v / max(n_studies, 1):.2f}" for k, v in self.seconds.items())


def _points(data: Path, split: str, localizer: Path | None, work: Path,
            tss: TotalSpineSeg | None = None) -> Path | None:
    """The points file the crops use, or ``None`` when there is no way to place levels."""
    if localizer is not None and localizer.is_dir():
        from rsna_lumbar.localize import tss_level_finder
        from rsna_lumbar.localize.keypoints.stage import predict_split as predict_points

        out = work / f"points_{split}.csv"
        predict_points(data, split, out, localizer, work=work,
                       levels=tss_level_finder(tss, work / "totalspineseg"))
        return out
    labelled = CompetitionFolder(data).label_coordinates_csv
    if split == "train" and labelled.is_file():
        LOGGER.info("no localiser: using the labelled points of %s", labelled)
        return labelled
    LOGGER.warning("no localiser in the model folder and no labelled points: priors only")
    return None


@dataclasses.dataclass
class _Kept:
    """An ensemble member still in use, with the seconds it has cost over the studies it ran."""

    member: object
    predictor: object
    seconds: float = 0.0
    studies: int = 0

    @property
    def per_study(self) -> float:
        return self.seconds / max(self.studies, 1)


class _EnsembleRunner:
    """Runs every kept ensemble member on batches of studies and sheds members on a budget.

    Called from the crops stage as each study's crops land on disk; every ``batch_studies``
    studies (and at :meth:`flush`) each member predicts the batch in one pass, so DICOM decoding
    of the next studies (in the crops' worker processes) overlaps the model work here. Members
    are kept in manifest order; when the seconds spent so far plus the projected cost of the
    remaining studies would pass the budget, the last kept member is shed (logged), never a row.
    """

    def __init__(self, ensemble, crops: Path, study_ids: list[int], budget_s: float,
                 started: float, device: str, batch_studies: int = 8):
        from rsna_lumbar.models import load_model_folder

        self.crops, self.budget_s, self.started = crops, budget_s, started
        self.batch_studies = max(1, batch_studies)
        self.position = {int(s): k for k, s in enumerate(study_ids)}
        self.total = np.zeros((len(study_ids), 25, 3))
        self.weight = np.zeros((len(study_ids), 25))
        self.members: list[_Kept] = []
        for member in ensemble.members:
            try:
                self.members.append(_Kept(member, load_model_folder(member.path, device=device)))
            except Exception as error:  # noqa: BLE001 - a broken member must not stop the run
                LOGGER.error("ensemble member %s cannot be loaded (%s: %s); continuing without it",
                             member.path, type(error).__name__, error)  # fmt: skip
        self.remaining = len(study_ids)
        self.batch: dict[int, dict[str, np.ndarray]] = {}

    def __call__(self, study_id: int) -> None:
        """Queue one study whose crops are on disk; predict when the batch is full."""
        self.remaining -= 1
        npz = self.crops / f"{study_id}.npz"
        if not npz.is_file() or not self.members:
            return
        with np.load(npz) as loaded:
            self.batch[int(study_id)] = {key: loaded[key] for key in loaded.files}
        if len(self.batch) >= self.batch_studies:
            self.flush()

    def flush(self) -> None:
        """Predict the queued studies with every kept member, then check the budget."""
        if not self.batch:
            return
        batch, self.batch = self.batch, {}
        for kept in list(self.members):
            member = kept.member
            member_started = time.perf_counter()
            try:
                results = kept.predictor.predict_studies(batch)
            except Exception as error:  # noqa: BLE001 - drop the member, keep the studies
                LOGGER.error("ensemble member %s failed on studies %s (%s: %s); dropped",
                             member.path, list(batch), type(error).__name__, error)  # fmt: skip
                self.members.remove(kept)
                continue
            for study_id, (probs, mask) in results.items():
                k = self.position[study_id]
                self.total[k][mask] += member.weight * probs[mask]
                self.weight[k][mask] += member.weight
            kept.seconds += time.perf_counter() - member_started
            kept.studies += len(batch)
        self._shed()

    def _shed(self) -> None:
        elapsed = time.perf_counter() - self.started
        while len(self.members) > 1:
            per_study = sum(kept.per_study for kept in self.members)
            if elapsed + per_study * self.remaining <= self.budget_s:
                return
            shed = self.members.pop()
            LOGGER.warning("time budget %.0f s: %.0f s spent, %d studies left at %.2f s each; "
                           "shedding ensemble member %s", self.budget_s, elapsed, self.remaining,
                           per_study, shed.member.path.name)  # fmt: skip


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def predict_split(
    data: str | os.PathLike,
    split: str,
    out: str | os.PathLike,
    models: str | os.PathLike | None,
    *,
    work: str | os.PathLike | None = None,
    budget_s: float = KAGGLE_BUDGET_S,
    timings: dict[str, float] | None = None,
    tss: TotalSpineSeg | None = None,
) -> pd.DataFrame:
    """Write a complete submission for ``split`` of the competition folder ``data`` to ``out``.

    Args:
        data: competition folder.
        split: ``train`` or ``test``.
        out: submission CSV path.
        models: model root (``weights/``): ``priors.json``, ensemble members, localiser.
        work: scratch folder for points and crops (default: next to ``out``).
        budget_s: total time budget in seconds; ensemble members are shed to honour it.
        timings: when given, filled with the wall seconds of each stage (all studies).
        tss: a :class:`~rsna_lumbar.localize.TotalSpineSeg` runner tried before the learned
            localiser on each study (``rsna_lumbar.localize.tss_runner("auto")`` finds one);
            None: the learned localiser only.
    """
    started = time.perf_counter()
    stages = _Stages()
    data = Path(data)
    work = Path(work) if work is not None else Path(out).parent / f"predict_work_{split}"
    study_ids = split_study_ids(data, split)
    priors = fallback_priors(models)
    total = np.zeros((len(study_ids), 25, 3))
    weight = np.zeros((len(study_ids), 25))
    ensemble = read_ensemble(models) if models is not None and Path(models).is_dir() else None
    if ensemble is None or not ensemble.members:
        LOGGER.warning("no trained models in %s: every study gets the fallback", models)
    else:
        try:
            points = stages.run("localise", _points, data, split, ensemble.localizer, work, tss)
            if points is not None:
                from rsna_lumbar.crops.stage import build_crops

                crops = work / f"crops_{split}"
                runner = stages.run("load models", _EnsembleRunner, ensemble, crops, study_ids,
                                    budget_s, started, _device())  # fmt: skip
                stages.run("crops + models", build_crops, data, split, crops, points=points,
                           work=work, montages=0, on_study=runner)  # fmt: skip
                stages.run("crops + models", runner.flush)
                total, weight = runner.total, runner.weight
        except Exception as error:  # noqa: BLE001 - the submission must still be written
            LOGGER.error("inference chain failed (%s: %s); falling back to priors",
                         type(error).__name__, error)  # fmt: skip
    predicted = weight > 0
    probs = np.where(predicted[..., None], total / np.maximum(weight, 1e-12)[..., None], priors)
    submission = build_submission(dict(zip(study_ids, probs)))
    write_submission(submission, out, study_ids)
    LOGGER.info("wrote %d rows for %d studies to %s; %d of %d targets from models, the rest "
                "from the fallback", len(submission), len(study_ids), out, int(predicted.sum()),
                predicted.size)  # fmt: skip
    LOGGER.info("seconds per study: %s", stages.report(len(study_ids)) or "none")
    if timings is not None:
        timings.update(stages.seconds)
    return submission
