"""``predict``: every study of a split → 25 rows of probabilities, never a missing row.

The chain, each stage guarded so that a failure degrades the prediction instead of the run:

0. device — CUDA only if a smoke test passes on it (:mod:`rsna_lumbar.devices`);
1. studies — from ``{split}_series_descriptions.csv`` (the list Kaggle scores);
2. a fallback submission (the class priors of ``MODELS/priors.json``, else uniform) is written
   first, so a complete file exists from the first seconds whatever happens next;
3. then, chunk by chunk of studies:

   a. points — the ensemble's learned localiser (``rsna-lumbar localize``, on the chosen
      device; on the CPU from then on if it fails on the GPU), else the localiser packaged
      with the kit (:mod:`rsna_lumbar.localize.packaged`), after TotalSpineSeg when a runner
      is given; without either, the labelled points when the split has them, else none;
   b. crops — :func:`rsna_lumbar.crops.stage.build_crops` on those points: resampling runs in
      a process pool across studies; each stack is decoded once per study, by whichever of a
      and b reads it first (:class:`~rsna_lumbar.dicom.volume_cache.VolumeCache`, in the
      scratch folder, emptied chunk by chunk); crops are cut at each crop geometry the
      members were trained at (``model.json``'s ``crops``), one cache per geometry;
   c. models — as studies' crops land, every kept member of the ensemble manifest
      (:mod:`rsna_lumbar.inference.ensemble`) predicts them in batches in this process while
      the pool decodes the next studies; weighted average of calibrated probabilities. A member
      that fails on the GPU is moved to the CPU and retried before it is dropped;
   d. the submission is rewritten (atomically) with what is known so far;

4. fallback — what no member predicted keeps the priors.

Time: :mod:`rsna_lumbar.inference.budget` — the budget counts from ``started_at`` and covers
every stage; work is shed (test-time augmentation, members, then the localiser's extra models)
when the measured pace would pass it, and chunks stop starting when even one would end late.

The run ends with a machine-readable summary (:class:`RunSummary`, written as JSON next to the
submission): targets from models and from the fallback, each member's fate and why, the device,
seconds per stage, what was shed. :meth:`RunSummary.problems` lists what makes a run not worth
submitting (no model loaded, priors missing, coverage below a threshold); ``rsna-lumbar predict
--strict`` turns them into a failing exit status after the submission is written.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rsna_lumbar.atomic import write_text
from rsna_lumbar.dicom.volume_cache import VolumeCache
from rsna_lumbar.inference.budget import Deadline, Plan
from rsna_lumbar.inference.ensemble import read_ensemble
from rsna_lumbar.layout import CompetitionFolder
from rsna_lumbar.localize.packaged import resolve
from rsna_lumbar.priors import load_priors, uniform_priors
from rsna_lumbar.submission import build_submission, write_submission
from rsna_lumbar.tables import split_study_ids

if TYPE_CHECKING:
    from rsna_lumbar.localize import TotalSpineSeg

LOGGER = logging.getLogger(__name__)
PRIORS_FILE = "priors.json"
KAGGLE_BUDGET_S = 9 * 3600 - 30 * 60
CHUNK_STUDIES = 32
MIN_COVERAGE = 0.7


def fallback_priors(models: str | os.PathLike | None) -> tuple[np.ndarray, str]:
    """(25, 3) priors from ``models/priors.json``, else uniform, and where they came from.

    A priors file that cannot be read, lacks a target or holds a row that is not a probability
    distribution gives uniform probabilities too (``"uniform (...why...)"``), never an error:
    the fallback is what must always work.
    """
    path = Path(models) / PRIORS_FILE if models is not None else None
    if path is None or not path.is_file():
        LOGGER.warning("no %s in %s: the fallback is uniform probabilities", PRIORS_FILE, models)
        return uniform_priors(), f"uniform (no {PRIORS_FILE})"
    try:
        priors = load_priors(path)
        if priors.shape != (25, 3) or not np.isfinite(priors).all() or (priors < 0).any():
            raise ValueError("not 25 rows of 3 finite probabilities")
    except Exception as error:  # noqa: BLE001 - any unreadable file means: uniform, said
        LOGGER.error("%s is unusable (%s): the fallback is uniform probabilities", path, error)
        return uniform_priors(), f"uniform ({PRIORS_FILE} unusable: {error})"
    LOGGER.info("fallback probabilities: class priors from %s", path)
    return priors, str(path)


@dataclasses.dataclass
class MemberReport:
    """One ensemble member's fate: ``used``, ``shed``, ``dropped`` or ``not loaded``."""

    path: str
    weight: float
    status: str = "used"
    reason: str = ""
    device: str = ""
    data_kind: str = "unknown"
    studies: int = 0
    failed_studies: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class RunSummary:
    """What a ``predict`` run did; :meth:`as_dict` is the JSON written next to the submission."""

    split: str
    studies: int
    submission: str
    fallback: str = "uniform"
    device: dict = dataclasses.field(default_factory=dict)
    localiser: dict = dataclasses.field(default_factory=dict)
    members: list[MemberReport] = dataclasses.field(default_factory=list)
    targets_from_models: int = 0
    studies_processed: int = 0
    stages_s: dict[str, float] = dataclasses.field(default_factory=dict)
    budget: dict = dataclasses.field(default_factory=dict)
    tta: bool = False
    shed: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def targets(self) -> int:
        return 25 * self.studies

    @property
    def coverage(self) -> float:
        """Fraction of the split's targets that came from models."""
        return self.targets_from_models / self.targets if self.targets else 0.0

    def problems(self, min_coverage: float = MIN_COVERAGE) -> list[str]:
        """Why this run should not be submitted (empty when it may be)."""
        found = []
        if not any(m.studies for m in self.members):
            found.append("no ensemble member predicted anything (see members)")
        if self.fallback.startswith("uniform"):
            found.append(f"the fallback is uniform probabilities: {self.fallback}")
        if self.coverage < min_coverage:
            found.append(f"only {self.coverage:.0%} of the targets came from models "
                         f"(threshold {min_coverage:.0%})")
        return found

    def as_dict(self, min_coverage: float = MIN_COVERAGE) -> dict:
        payload = dataclasses.asdict(self)
        payload.update(targets=self.targets,
                       targets_from_fallback=self.targets - self.targets_from_models,
                       coverage=round(self.coverage, 4), problems=self.problems(min_coverage))
        return payload

    def write(self, path: str | os.PathLike, min_coverage: float = MIN_COVERAGE) -> None:
        write_text(path, json.dumps(self.as_dict(min_coverage), indent=1) + "\n")


def summary_path(out: str | os.PathLike) -> Path:
    """Where the run summary of submission ``out`` goes: ``{stem}_summary.json`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}_summary.json")


def _points(data: Path, split: str, localizer: Path | None, work: Path, studies: list[int],
            chunk: int, models_per_task: int | None, tss: TotalSpineSeg | None,
            volumes: VolumeCache, split_index: pd.DataFrame, where: dict,
            summary: RunSummary) -> Path | None:
    """The points file the crops of ``studies`` use, or ``None`` when levels cannot be placed.

    The learned localiser runs on ``where["device"]``; when it fails on the GPU it runs again
    on the CPU, and ``where`` keeps it there for the chunks that follow (a warning says why).
    """
    if localizer is not None and localizer.is_dir():
        from rsna_lumbar.localize import tss_level_finder
        from rsna_lumbar.localize.stage import predict_split as predict_points

        out = work / f"points_{split}_{chunk}.csv"
        levels = tss_level_finder(tss, work / "totalspineseg")

        def locate() -> None:
            predict_points(data, split, out, localizer, work=work, studies=studies,
                           models_per_task=models_per_task, volumes=volumes, levels=levels,
                           index=split_index, device=where["device"])  # fmt: skip

        try:
            locate()
        except Exception as error:  # noqa: BLE001 - a GPU failure must not cost the points
            if where["device"].type != "cuda":
                raise
            import torch

            reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            LOGGER.error("the localiser failed on %s (%s); running it on the CPU",
                         where["device"], reason)  # fmt: skip
            summary.warnings.append(f"localiser on the CPU after: {reason}")
            where["device"] = torch.device("cpu")
            locate()
        return out
    labelled = CompetitionFolder(data).label_coordinates_csv
    if split == "train" and labelled.is_file():
        return labelled
    return None


@dataclasses.dataclass
class Votes:
    """The ensemble's weighted votes so far: ``total`` (N, 25, 3) sums of weight × probability,
    ``weight`` (N, 25) sums of weights, for the split's N studies in order. Owned by
    :func:`predict_split`, so a failure anywhere keeps what was already predicted."""

    total: np.ndarray
    weight: np.ndarray

    @classmethod
    def empty(cls, n_studies: int) -> Votes:
        return cls(np.zeros((n_studies, 25, 3)), np.zeros((n_studies, 25)))

    def probabilities(self, priors: np.ndarray) -> np.ndarray:
        """(N, 25, 3): the weighted mean where some member voted, ``priors`` elsewhere."""
        voted = self.weight > 0
        mean = self.total / np.maximum(self.weight, 1e-12)[..., None]
        return np.where(voted[..., None], mean, priors)


@dataclasses.dataclass
class _Kept:
    """An ensemble member in use, its report and its run of wholly failed batches."""

    member: object
    predictor: object
    report: MemberReport
    failed_batches: int = 0

    @property
    def geometry(self) -> dict:
        """The crop geometry the member was trained on (``model.json``'s ``crops``; folders
        written before it was recorded: the default)."""
        return self.predictor.geometry

    @functools.cached_property
    def geometry_key(self) -> str:
        """:func:`rsna_lumbar.crops.stage.settings_key` of :attr:`geometry` (fixed for the
        member's life: a reload onto the CPU reads the same ``model.json``)."""
        from rsna_lumbar.crops.stage import settings_key

        return settings_key(self.geometry)


class _EnsembleRunner:
    """Runs every kept ensemble member on batches of studies as their crops land.

    Called from the crops stage with each study id once its crops are on disk; every
    ``batch_studies`` studies (and at :meth:`flush`) each member predicts the batch in one pass,
    so DICOM decoding of the next studies (in the crops' worker processes) overlaps the model
    work here. When a member fails on a batch: off the CPU, it is reloaded from disk onto the
    CPU and the batch retried; on the CPU, the batch's studies are retried one by one (a study
    that fails alone keeps the other members' votes or the priors). A member is dropped only
    after :data:`DROP_AFTER` batches in a row in which it predicted nothing.
    """

    DROP_AFTER = 3

    def __init__(self, ensemble, votes: Votes, study_ids: list[int], device,
                 reports: list[MemberReport], batch_studies: int = 8):
        from rsna_lumbar.models import load_model_folder
        from rsna_lumbar.provenance import read_provenance

        self.load = load_model_folder
        self.votes = votes
        self.batch_studies = max(1, batch_studies)
        self.position = {int(s): k for k, s in enumerate(study_ids)}
        self.members: list[_Kept] = []
        self.crops: dict[str, Path] = {}  # crop geometry key → the split's crop cache at it
        for member in ensemble.members:
            record = read_provenance(member.path) or {}
            report = MemberReport(str(member.path), member.weight, device=str(device),
                                  data_kind=record.get("data_kind", "unknown"))  # fmt: skip
            reports.append(report)
            try:
                predictor = self._load_on(member.path, device, report)
            except Exception as error:  # noqa: BLE001 - a broken member must not stop the run
                report.status, report.reason = "not loaded", f"{type(error).__name__}: {error}"
                LOGGER.error("ensemble member %s cannot be loaded (%s); continuing without it",
                             member.path, report.reason)  # fmt: skip
                continue
            self.members.append(_Kept(member, predictor, report))
        self.batch: dict[int, dict[str, np.ndarray]] = {}

    def _load_on(self, path, device, report: MemberReport):
        """Load on ``device``; on failure there, load on the CPU (the report says why)."""
        try:
            return self.load(path, device=device)
        except Exception as error:
            if str(device) == "cpu":
                raise
            self._to_cpu(report, error)
            return self.load(path, device="cpu")

    @staticmethod
    def _to_cpu(report: MemberReport, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"
        LOGGER.error("ensemble member %s failed on %s (%s); using it on the CPU", report.path,
                     report.device, reason)  # fmt: skip
        report.device, report.reason = "cpu", f"on the CPU after: {reason}"

    def geometries(self) -> dict[str, dict]:
        """Crop geometry key (:func:`rsna_lumbar.crops.stage.settings_key`) → geometry, for
        the kept members; the one most members use first."""
        from collections import Counter

        found = {k.geometry_key: k.geometry for k in self.members}
        uses = Counter(k.geometry_key for k in self.members)
        return {key: found[key] for key, _ in uses.most_common()}

    def set_tta(self, on: bool) -> None:
        """Test-time augmentation on or off for every kept member."""
        for kept in self.members:
            kept.predictor.tta = on

    def tta_seconds(self) -> dict[str, float]:
        """Seconds each kept member spent on its test-time augmentation passes so far."""
        return {k.report.path: k.predictor.tta_seconds for k in self.members}

    def seconds(self) -> dict[str, float]:
        return {kept.report.path: kept.report.seconds for kept in self.members}

    def keep_only(self, paths: list[str]) -> None:
        """Shed every member not in ``paths`` (their reports say so)."""
        for kept in [k for k in self.members if k.report.path not in paths]:
            kept.report.status, kept.report.reason = "shed", "time budget"
            self.members.remove(kept)

    def __call__(self, study_id: int) -> None:
        """Queue one study whose crops are on disk (at every geometry in :attr:`crops`);
        predict when the batch is full."""
        arrays = {}
        for geometry, root in self.crops.items():
            npz = root / f"{study_id}.npz"
            if npz.is_file():
                with np.load(npz) as loaded:
                    arrays[geometry] = {key: loaded[key] for key in loaded.files}
        if not arrays or not self.members:
            return
        self.batch[int(study_id)] = arrays
        if len(self.batch) >= self.batch_studies:
            self.flush()

    def _predict(self, kept: _Kept, batch: dict) -> dict:
        """One member on one batch (module docstring); the studies it predicted."""
        geometry = kept.geometry_key
        batch = {s: arrays[geometry] for s, arrays in batch.items() if geometry in arrays}
        if not batch:
            return {}
        try:
            return kept.predictor.predict_studies(batch)
        except Exception as error:  # noqa: BLE001 - retried, never fatal
            if kept.predictor.device.type != "cpu":
                self._to_cpu(kept.report, error)
                try:
                    moved = self.load(kept.report.path, device="cpu")
                    moved.tta, moved.tta_seconds = kept.predictor.tta, kept.predictor.tta_seconds
                    kept.predictor = moved
                    return kept.predictor.predict_studies(batch)
                except Exception as again:  # noqa: BLE001
                    error = again
            LOGGER.error("ensemble member %s failed on studies %s (%s: %s); retrying them one "
                         "by one", kept.report.path, list(batch), type(error).__name__,
                         error)  # fmt: skip
        results = {}
        for study_id, arrays in batch.items():
            try:
                results.update(kept.predictor.predict_studies({study_id: arrays}))
            except Exception as error:  # noqa: BLE001 - this study keeps the other votes
                kept.report.reason = f"study {study_id}: {type(error).__name__}: {error}"
                kept.report.failed_studies += 1
        return results

    def flush(self) -> None:
        """Predict the queued studies with every kept member."""
        if not self.batch:
            return
        batch, self.batch = self.batch, {}
        for kept in list(self.members):
            started = time.perf_counter()
            results = self._predict(kept, batch)
            kept.report.seconds += time.perf_counter() - started
            kept.failed_batches = 0 if results else kept.failed_batches + 1
            if kept.failed_batches >= self.DROP_AFTER:
                kept.report.status = "dropped"
                LOGGER.error("ensemble member %s predicted nothing in %d batches in a row "
                             "(%s); dropped", kept.report.path, self.DROP_AFTER,
                             kept.report.reason)  # fmt: skip
                self.members.remove(kept)
            for study_id, (probs, mask) in results.items():
                mask = mask & np.isfinite(probs).all(axis=1)  # a NaN vote is no vote
                k = self.position[study_id]
                self.votes.total[k][mask] += kept.member.weight * probs[mask]
                self.votes.weight[k][mask] += kept.member.weight
            kept.report.studies += len(results)

    def discard(self) -> None:
        """Forget the queued studies (their chunk failed; they keep what they have)."""
        self.batch = {}


def _write(out: Path, study_ids: list[int], priors: np.ndarray, votes: Votes) -> int:
    """Write the submission (models where they voted, priors elsewhere); returns the number of
    targets from models."""
    probs = votes.probabilities(priors)
    write_submission(build_submission(dict(zip(study_ids, probs))), out, study_ids)
    return int((votes.weight > 0).sum())


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), max(size, 1))]


def predict_split(
    data: str | os.PathLike,
    split: str,
    out: str | os.PathLike,
    models: str | os.PathLike | None,
    *,
    work: str | os.PathLike | None = None,
    budget_s: float = KAGGLE_BUDGET_S,
    started_at: float | None = None,
    device: str = "auto",
    chunk_studies: int = CHUNK_STUDIES,
    min_coverage: float = MIN_COVERAGE,
    timings: dict[str, float] | None = None,
    tss: TotalSpineSeg | None = None,
    tta: bool | None = None,
    clock=time.time,
) -> RunSummary:
    """Write a complete submission for ``split`` of the competition folder ``data`` to ``out``.

    Args:
        data: competition folder.
        split: ``train`` or ``test``.
        out: submission CSV path; the run summary goes to :func:`summary_path` of it.
        models: model root (``weights/``): ``priors.json``, ensemble members, localiser.
        work: scratch folder for points and crops (default: a temporary folder, removed after).
        budget_s: seconds allowed from ``started_at`` to the last row written.
        started_at: Unix time the budget counts from (default: now).
        device: ``auto``, ``cpu`` or ``cuda`` (see :func:`rsna_lumbar.devices.choose_device`;
            a wrong choice raises ``ValueError`` before anything is written).
        chunk_studies: studies localised and cropped per chunk (the budget is judged between).
        min_coverage: the coverage below which :meth:`RunSummary.problems` complains.
        timings: when given, filled with the wall seconds of each stage (all studies).
        tss: a :class:`~rsna_lumbar.localize.TotalSpineSeg` runner tried before the learned
            localiser on each study; None: the learned localiser only.
        tta: test-time augmentation (every member also grades the canal crops mirrored
            left-right, :func:`rsna_lumbar.crops.recipes.mirror_axis`, and averages); None:
            the ensemble manifest's ``tta``. Shed first when time runs short.
        clock: the Unix-time clock of the budget (tests pass their own).

    Returns:
        The :class:`RunSummary` (also written as JSON).
    """
    from rsna_lumbar.devices import CHOICES, choose_device

    deadline = Deadline(budget_s, clock() if started_at is None else started_at, clock)
    if device not in CHOICES:
        raise ValueError(f"device {device!r}: use one of {', '.join(CHOICES)}")
    # An explicit device is the caller's promise: a wrong one is an error before anything is
    # written. "auto" (the kernel's) is chosen after the fallback file exists.
    choice = choose_device(device) if device != "auto" else None
    data, out = Path(data), Path(out)
    study_ids = split_study_ids(data, split)
    priors, source = fallback_priors(models)
    summary = RunSummary(split, len(study_ids), str(out), fallback=source,
                         budget={"budget_s": budget_s, "started_at": deadline.started_at})
    votes = Votes.empty(len(study_ids))
    _write(out, study_ids, priors, votes)
    LOGGER.info("wrote the fallback submission for %d studies to %s; now the models",
                len(study_ids), out)  # fmt: skip
    stages: dict[str, float] = {}
    try:
        choice = choice or choose_device("auto")
        summary.device = choice.as_dict()
        LOGGER.info("device: %s (%s)", choice.device, choice.note)
        ensemble = read_ensemble(models) if models is not None and Path(models).is_dir() else None
        if ensemble is None or not ensemble.members:
            summary.errors.append(f"no ensemble members in {models}")
            LOGGER.error("no trained models in %s: every study gets the fallback", models)
        else:
            summary.tta = ensemble.tta if tta is None else bool(tta)
            with ExitStack() as scratch:
                if work is None:
                    temporary = tempfile.TemporaryDirectory(prefix="rsna-predict-")
                    work = scratch.enter_context(temporary)
                _run_chunks(data, split, out, Path(work), ensemble, study_ids, priors, votes,
                            deadline, choice.device, chunk_studies, tss, summary,
                            stages)  # fmt: skip
    except Exception as error:  # noqa: BLE001 - the submission must still be written
        summary.errors.append(f"{type(error).__name__}: {error}")
        LOGGER.exception("inference chain failed (%s: %s); what is not predicted yet falls back "
                         "to priors", type(error).__name__, error)  # fmt: skip
    summary.targets_from_models = _write(out, study_ids, priors, votes)
    summary.stages_s = {k: round(v, 2) for k, v in stages.items()}
    summary.budget["elapsed_s"] = round(deadline.elapsed, 1)
    summary.write(summary_path(out), min_coverage)
    LOGGER.info("wrote %d rows for %d studies to %s; %d of %d targets from models (%.0f%%), "
                "the rest from the fallback (%s)", 25 * len(study_ids), len(study_ids), out,
                summary.targets_from_models, summary.targets, 100 * summary.coverage,
                source)  # fmt: skip
    for warning in summary.warnings:
        LOGGER.warning("warning: %s", warning)
    for problem in summary.problems(min_coverage):
        LOGGER.warning("problem: %s", problem)
    if timings is not None:
        timings.update(stages)
    return summary


def _run_chunks(data, split, out, work, ensemble, study_ids, priors, votes, deadline, device,
                chunk_studies, tss, summary, stages) -> None:
    """Step 3 of the module docstring, voting into ``votes``.

    A chunk that raises is logged and recorded in ``summary.errors``; its studies keep what they
    have (priors, or the votes of batches that finished) and the next chunk runs.
    """
    from rsna_lumbar.crops.stage import build_crops
    from rsna_lumbar.dicom.index import read_index, write_index

    def timed(name, function, *args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - started

    # The split's header index, read once before the chunks (its cost does not count as pace)
    # and handed to every chunk's localiser and crops.
    split_index = read_index(timed("index", write_index, data, split, work, progress=False))
    runner = timed("load models", _EnsembleRunner, ensemble, votes, study_ids, device,
                   summary.members)  # fmt: skip
    geometries = runner.geometries()  # the members' crop geometries, most used first
    runner.crops = {key: work / (f"crops_{split}" if i == 0 else f"crops_{split}_{key.split()[-1]}")
                    for i, key in enumerate(geometries)}  # fmt: skip
    summary.warnings += [f"member {m.path} was trained on {m.data_kind} data (provenance.json)"
                         for m in summary.members if m.data_kind != "competition"]
    volumes = VolumeCache(work / "volumes")
    localizer = _localiser_folder(ensemble.localizer, summary)
    localiser_models, floor = _localiser_models(localizer)
    summary.localiser = {"path": str(localizer) if localiser_models else None,
                         "models_per_task": localiser_models,
                         "packaged": _is_packaged(localizer)}
    plan = Plan([k.report.path for k in runner.members], localiser_models, floor, tta=summary.tta)
    runner.set_tta(summary.tta)
    localiser = {"device": device}  # the CPU for good once the localiser fails on the GPU
    for index, chunk in enumerate(_chunks(study_ids, chunk_studies)):
        if not runner.members:
            break
        if not plan.next_chunk_fits(deadline, len(chunk), first=index == 0):
            LOGGER.warning("time budget: %.0f s of %.0f s spent; %d studies left get the fallback",
                           deadline.elapsed, deadline.budget_s,
                           len(study_ids) - summary.studies_processed)  # fmt: skip
            summary.budget["stopped_early"] = True
            break
        chunk_started, before, tta_before = time.perf_counter(), runner.seconds(), runner.tta_seconds()
        localiser_s = 0.0
        try:
            loc_started = time.perf_counter()
            points = timed("localise", _points, data, split, localizer, work, chunk,
                           index, plan.localiser_models or None, tss, volumes, split_index,
                           localiser, summary)  # fmt: skip
            localiser_s = time.perf_counter() - loc_started if points is not None else 0.0
            if points is not None:  # other geometries first; the models run as the main one's land
                for key in reversed(list(geometries)):
                    timed("crops + models", build_crops, data, split, runner.crops[key], points=points,
                          work=work, montages=0, on_study=runner if key == next(iter(geometries)) else None,
                          studies=chunk, progress=False, volumes=volumes, index=split_index,
                          geometry=geometries[key])  # fmt: skip
                timed("crops + models", runner.flush)
        except Exception as error:  # noqa: BLE001 - one chunk must not cost the others
            runner.discard()
            summary.errors.append(f"chunk {index} ({len(chunk)} studies from {chunk[0]}): "
                                  f"{type(error).__name__}: {error}")
            LOGGER.exception("chunk %d failed (%s: %s); its studies keep what they have",
                             index, type(error).__name__, error)  # fmt: skip
        finally:
            volumes.forget(chunk)
        summary.studies_processed += len(chunk)
        after, tta_after = runner.seconds(), runner.tta_seconds()
        plan.record_chunk(len(chunk), time.perf_counter() - chunk_started, localiser_s,
                          {p: after[p] - before.get(p, 0.0) for p in after},
                          {p: tta_after[p] - tta_before.get(p, 0.0) for p in tta_after})  # fmt: skip
        _write(out, study_ids, priors, votes)
        plan.members = [p for p in plan.members if p in after]
        if plan.shed_to_fit(deadline, len(study_ids) - summary.studies_processed):
            runner.set_tta(plan.tta)
            runner.keep_only(plan.members)
            summary.shed = list(plan.shed)
    summary.localiser["models_per_task_at_end"] = plan.localiser_models


def _localiser_folder(named: Path | None, summary: RunSummary) -> Path | None:
    """The ensemble's localiser folder when it holds a trained one, else the packaged localiser
    (:func:`rsna_lumbar.localize.packaged.resolve`; a warning when the manifest named a folder
    that holds none), else None (an install without it: labelled points or the priors)."""
    try:
        folder = resolve(None, default=named)
    except FileNotFoundError as error:
        if named is not None:
            summary.warnings.append(f"{named} holds no localiser, and this install lacks the "
                                    "packaged one: no learned points")
            LOGGER.warning("%s", error)
        return None
    if named is not None and folder != named:
        summary.warnings.append(f"{named} holds no localiser; the packaged localiser placed the points")
    return folder


def _is_packaged(localizer: Path | None) -> bool:
    """Whether ``localizer`` is the packaged localiser or a copy of it (``provenance.json``)."""
    from rsna_lumbar.provenance import PACKAGED as PACKAGED_KIND
    from rsna_lumbar.provenance import read_provenance

    return localizer is not None and (read_provenance(localizer) or {}).get("data_kind") == PACKAGED_KIND


def _localiser_models(localizer: Path | None) -> tuple[int, int]:
    """(models per task, the fewest worth keeping: one fold's) of a localiser folder."""
    config = localizer / "config.json" if localizer is not None else None
    if config is None or not config.is_file():
        return 0, 0
    payload = json.loads(config.read_text(encoding="utf-8"))
    per_task = max((len(names) for names in payload.get("files", {}).values()), default=0)
    return per_task, min(per_task, int(payload.get("models_per_fold", 1)))
