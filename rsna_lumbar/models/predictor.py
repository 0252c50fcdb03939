"""Inference from a model folder: the API ``predict`` calls, rebuilt from the folder alone.

``load_model_folder(path)`` reads ``model.json`` (network description), every
``fold_*/model.safetensors``, ``calibration.json`` (per-family temperatures; absent → none) and
``priors.json`` (the fallback) — the folder contract of :mod:`rsna_lumbar.models.folder` — and
returns a :class:`FoldEnsemble`. Given one study's crop arrays (the crop-cache npz structure:
``{condition}/{level}/{view}`` → ``(S, H, W)``), it returns calibrated probabilities ``(25, 3)``
in :data:`rsna_lumbar.vocabulary.TARGETS` order and a bool mask ``(25,)``: ``True`` where the
networks predicted, ``False`` where the study lacked every view of that sample (for a level
model, ``model.level_context``: every view of that sample's level) or the folder has no model
for its family — those rows hold the fallback (the folder's priors unless the caller
passes its own).

The fold models' logits are averaged, divided by the family temperature, then softmaxed.
With :attr:`FoldEnsemble.tta` on, each fold model also grades the crops mirrored left–right where
that keeps the grade (:func:`rsna_lumbar.crops.recipes.mirror_axis`: the canal's views), and the
two passes' logits are averaged before the temperature. The mirrored input is the whole patient
mirrored (:class:`Mirrored`: the canal's crops flipped, the left and right crops of the sided
conditions swapped), which a level-context network reads whole (:func:`mirrored_pass`).
Weights load from local files only; nothing touches the network.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from rsna_lumbar.crops.recipes import geometry_from_settings, mirror_axis
from rsna_lumbar.models.dataset import StudyDataset, family_slots
from rsna_lumbar.models.folder import (
    CALIBRATION_FILE,
    build_network,
    fold_weight_files,
    load_temperatures,
    read_description,
)
from rsna_lumbar.models.forward import predict_logits, softmax
from rsna_lumbar.models.network import LumbarNet
from rsna_lumbar.models.registry import ModelSpec
from rsna_lumbar.models.weights import load_weights
from rsna_lumbar.priors import load_priors
from rsna_lumbar.vocabulary import TARGETS, Condition

LOGGER = logging.getLogger(__name__)


def _mirrored(key: str, array: np.ndarray) -> np.ndarray:
    """A crop-cache array (key ``{condition}/{level}/{view}``) mirrored left–right when its
    family and view allow it (:func:`~rsna_lumbar.crops.recipes.mirror_axis`), else as is."""
    condition, _, view = key.split("/")
    axis = mirror_axis(Condition(condition).family.value, view)
    return array if axis is None else np.ascontiguousarray(np.flip(array, axis=axis))


def _other_side(condition: str) -> str:
    """The same condition on the other side (a condition without a side is itself)."""
    this = Condition(condition)
    if this.side is None:
        return condition
    return next(c.value for c in Condition if c.family is this.family and c.side not in (None, this.side))


class Mirrored:
    """A crop source (anything with ``arrays(study_id)`` and ``geometry``: a
    :class:`~rsna_lumbar.crops.cache.CropCache`, the in-memory studies of prediction) whose
    studies come back as the patient mirrored left–right: arrays flipped where the grade allows
    it (:func:`_mirrored`: the canal's), and each sided condition's crops under the other
    side's key (they are already cut in one orientation for both sides). The input of the
    test-time augmentation pass, at prediction and out of fold
    (:func:`rsna_lumbar.training.held_out.held_out_logits`)."""

    def __init__(self, source) -> None:
        self.source = source
        self.geometry = source.geometry

    def arrays(self, study_id: int) -> dict[str, np.ndarray]:
        out = {}
        for key, array in self.source.arrays(study_id).items():
            condition, level, view = key.split("/")
            out[f"{_other_side(condition)}/{level}/{view}"] = _mirrored(key, array)
        return out


def mirrored_families(families: Sequence[str], views: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The families of which some view has a mirror axis (the test-time augmentation's)."""
    return tuple(f for f in families if any(mirror_axis(f, v) is not None for v in views[f]))


def mirrored_pass(families: Sequence[str], views: Mapping[str, Sequence[str]],
                  level_context: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:  # fmt: skip
    """``(fed, averaged)``: the families the test-time mirrored pass reads and those whose
    logits it averages (:func:`mirrored_families`; none: no pass). A level-context network reads
    every family, its heads seeing the whole mirrored level."""
    averaged = mirrored_families(families, views)
    if not averaged:
        return (), ()
    return (tuple(families) if level_context else averaged), averaged


class _Arrays:
    """A one-off crop 'cache' over in-memory studies (duck-types ``CropCache.arrays`` and
    ``CropCache.geometry``: the geometry the model was trained at, so views cut with context
    are windowed as in training)."""

    def __init__(self, studies: Mapping[int, Mapping[str, np.ndarray]], geometry: dict):
        self.studies = studies
        self.geometry = geometry

    def arrays(self, study_id: int):
        return self.studies[study_id]


class FoldEnsemble:
    """The fold models of one model folder (see module docstring)."""

    def __init__(self, folder: Path, description: dict, models: list[LumbarNet],
                 temperatures: dict[str, float], priors: np.ndarray | None, device: torch.device):
        self.folder = folder
        self.description = description
        self.models = models
        self.temperatures = temperatures
        self.priors = priors
        self.device = device
        self.tta = False  # test-time augmentation (module docstring)
        self.tta_seconds = 0.0  # wall seconds spent on the mirrored passes so far
        self.families = tuple(description["families"])
        self.views = {f: tuple(v) for f, v in description["views"].items()}
        self.spec = ModelSpec(**description["spec"])
        self.level_context = bool(description.get("level_context", False))
        self.geometry = geometry_from_settings(description.get("crops") or {})  # of its crops

    def to(self, device: str | torch.device) -> FoldEnsemble:
        """Move every fold model to ``device`` (in place); returns self."""
        self.device = torch.device(device)
        self.models = [model.to(self.device) for model in self.models]
        return self

    def __repr__(self) -> str:
        return (f"FoldEnsemble({self.folder}, spec={self.spec.name}, folds={len(self.models)}, "
                f"families={self.families}, temperatures={self.temperatures})")

    @torch.no_grad()
    def predict_studies(self, studies: Mapping[int, Mapping[str, np.ndarray]],
                        fallback: np.ndarray | None = None, batch_size: int = 8):
        """``{study: (probabilities (25, 3), mask (25,))}`` for several studies at once.

        Args:
            studies: study id → its crop arrays.
            fallback: (25, 3) probabilities for unpredicted rows (default: the folder's priors,
                else uniform).
        """
        if fallback is None:
            fallback = self.priors if self.priors is not None else np.full((len(TARGETS), 3), 1 / 3)
        ids = list(studies)
        dataset = StudyDataset(_Arrays(studies, self.geometry), ids, None, self.families, self.views,
                               self.spec.slices, self.spec.size)
        summed = None
        for model in self.models:
            order, out = predict_logits(model, dataset, self.device, batch_size)
            if summed is None:
                summed = {f: out[f][0].astype(np.float64) for f in out}
                predicted = {f: out[f][1] for f in out}
            else:
                for f in out:
                    summed[f] += out[f][0]
        if self.tta:
            started = time.perf_counter()
            for f, logits in self._mirrored_logits(studies, ids, batch_size).items():
                summed[f] = (summed[f] + logits) / 2
            self.tta_seconds += time.perf_counter() - started
        target_index = {(c.value, lv.value): t for t, (c, lv) in enumerate(TARGETS)}
        results = {}
        for i, study in enumerate(order):
            probs = np.array(fallback, dtype=np.float64, copy=True)
            mask = np.zeros(len(TARGETS), bool)
            for f in self.families:
                logits = summed[f][i] / len(self.models)
                p = softmax(logits, self.temperatures.get(f, 1.0))
                for n, slot in enumerate(family_slots(f)):
                    if predicted[f][i, n]:
                        probs[target_index[slot]] = p[n]
                        mask[target_index[slot]] = True
            results[study] = (probs, mask)
        return results

    def _mirrored_logits(self, studies, ids: list[int], batch_size: int) -> dict[str, np.ndarray]:
        """Summed fold logits ``{family: (n, N_f, 3)}`` on the crops mirrored along their
        :func:`~rsna_lumbar.crops.recipes.mirror_axis`, for the families that have one."""
        fed, averaged = mirrored_pass(self.families, self.views, self.level_context)
        if not fed:
            return {}
        dataset = StudyDataset(Mirrored(_Arrays(studies, self.geometry)), ids, None, fed,
                               self.views, self.spec.slices, self.spec.size)  # fmt: skip
        summed: dict[str, np.ndarray] = {}
        for model in self.models:
            _, out = predict_logits(model, dataset, self.device, batch_size)
            for f in averaged:
                summed[f] = summed.get(f, 0.0) + out[f][0].astype(np.float64)
        return summed

    def predict_study(self, arrays: Mapping[str, np.ndarray] | str | os.PathLike,
                      fallback: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One study: its crop arrays (or its ``.npz`` path) → ``(probabilities (25, 3), mask (25,))``."""
        if not isinstance(arrays, Mapping):
            with np.load(arrays) as npz:
                arrays = {k: npz[k] for k in npz.files}
        return self.predict_studies({0: arrays}, fallback)[0]


def load_model_folder(path: str | os.PathLike, device: str | torch.device = "cpu",
                      folds: Sequence[int] | None = None) -> FoldEnsemble:
    """Rebuild the fold ensemble of a model folder written by ``rsna-lumbar train``.

    Raises:
        FileNotFoundError: the folder lacks ``model.json`` or any ``fold_*/model.safetensors``;
            the message says which and how to produce it.
    """
    folder = Path(path)
    description = read_description(folder)
    files = fold_weight_files(folder)
    if folds is not None:
        files = [f for f in files if int(f.parent.name.split("_")[1]) in set(folds)]
    if not files:
        msg = f"{folder} has no fold_*/model.safetensors; finish training it ('rsna-lumbar train')"
        raise FileNotFoundError(msg)
    device = torch.device(device)
    models = []
    for file in files:
        model = build_network(description)
        load_weights(model, file)
        models.append(model.to(device).eval())
    temperatures = load_temperatures(folder / CALIBRATION_FILE)
    if not temperatures:
        LOGGER.info("%s: no calibration.json (run 'rsna-lumbar report'); no temperature scaling", folder)
    priors = load_priors(folder / "priors.json") if (folder / "priors.json").is_file() else None
    return FoldEnsemble(folder, description, models, temperatures, priors, device)
