"""Predicting studies with a trained network, and the out-of-fold (OOF) files.

* :func:`predict_logits` — a network over a :class:`StudyDataset` →
  ``{family: (logits (n, N_f, 3), predicted (n, N_f) bool)}`` plus the study order.
* :func:`oof_frame` — one row per (study, target) of a fold: ``row_id, study_id, fold, family,
  predicted, label, logit_normal_mild, logit_moderate, logit_severe``; rows the network could not
  predict (no view in the cache) carry the training folds' class priors as log-probabilities and
  ``predicted = 0``.
* :func:`submission_from_logits` — the submission-format CSV (``row_id`` + 3 probabilities)
  that ``rsna-lumbar score`` reads, optionally with per-family temperatures.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from rsna_lumbar.devices import autocast
from rsna_lumbar.training.dataset import collate, family_slots
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, TARGETS, Condition

LOGIT_COLUMNS = tuple(f"logit_{c}" for c in PROBABILITY_COLUMNS)


def forward_batch(model, batch: dict, device: torch.device, amp: bool = False) -> dict:
    """Run ``model`` on a collated batch → family → logits ``(B, N_f, 3)`` (float32)."""
    inputs = {}
    for f, x in batch["x"].items():
        b, n = x.shape[:2]
        inputs[f] = (x.to(device, non_blocking=True).flatten(0, 1),
                     batch["mask"][f].to(device, non_blocking=True).flatten(0, 1))
    with autocast(device, amp):
        out = model(inputs)
    return {f: out[f].float().reshape(batch["x"][f].shape[0], -1, 3) for f in out}


@torch.no_grad()
def predict_logits(model, dataset, device: torch.device, batch_size: int = 16, amp: bool = False,
                   indices=None):
    """Logits of every study in ``dataset`` (or ``indices`` of it).

    Returns:
        ``(study_ids, {family: (logits float32 (n, N_f, 3), predicted bool (n, N_f))})``.
    """
    model.eval()
    indices = list(range(len(dataset))) if indices is None else list(indices)
    studies, chunks = [], {f: ([], []) for f in dataset.families}
    for start in range(0, len(indices), batch_size):
        batch = collate([dataset[i] for i in indices[start:start + batch_size]])
        logits = forward_batch(model, batch, device, amp)
        studies.extend(int(s) for s in batch["study_id"])
        for f in dataset.families:
            chunks[f][0].append(logits[f].cpu().numpy())
            chunks[f][1].append(batch["mask"][f].any(dim=-1).numpy())
    out = {}
    for f, (lg, pr) in chunks.items():
        n = len(family_slots(f))
        out[f] = (np.concatenate(lg) if lg else np.zeros((0, n, 3), np.float32),
                  np.concatenate(pr) if pr else np.zeros((0, n), bool))
    return studies, out


def oof_frame(fold: int, study_ids, outputs, priors: np.ndarray,
              labels: Mapping[int, Mapping[str, int]], missing=()) -> pd.DataFrame:
    """OOF rows of one fold (module docstring), sorted by study. ``priors``: (25, 3) of the
    training folds; ``missing``: the fold's studies without crops (every row a prior)."""
    position = {s: i for i, s in enumerate(study_ids)}
    log_priors = np.log(np.clip(priors, 1e-12, None))
    records = []
    for study in sorted({*position, *(int(s) for s in missing)}):
        slot_of = {}
        if study in position:
            i = position[study]
            for f, (logits, predicted) in outputs.items():
                for n, (condition, level) in enumerate(family_slots(f)):
                    slot_of[(condition, level)] = (logits[i, n], bool(predicted[i, n]))
        for t, (condition, level) in enumerate(TARGETS):
            column = f"{condition.value}_{level.value}"
            logit, predicted = slot_of.get((condition.value, level.value), (None, False))
            values = logit if predicted else log_priors[t]
            records.append((f"{study}_{column}", study, fold, condition.family.value, int(predicted),
                            labels.get(study, {}).get(column, -1), *map(float, values)))
    return pd.DataFrame(records, columns=["row_id", "study_id", "fold", "family", "predicted",
                                          "label", *LOGIT_COLUMNS])


def softmax(logits: np.ndarray, temperature=1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / np.asarray(temperature, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(frame: pd.DataFrame, temperatures: Mapping[str, float] | None = None) -> np.ndarray:
    """(N, 3) probabilities of an OOF frame; temperatures apply to predicted rows only."""
    logits = frame[list(LOGIT_COLUMNS)].to_numpy(np.float64)
    t = np.ones(len(frame))
    if temperatures:
        t = frame["family"].map(lambda f: temperatures.get(f, 1.0)).to_numpy(np.float64)
        t = np.where(frame["predicted"].to_numpy() == 1, t, 1.0)
    return softmax(logits, t[:, None])


def submission_from_logits(frame: pd.DataFrame, temperatures=None) -> pd.DataFrame:
    """``row_id,normal_mild,moderate,severe`` rows of an OOF frame, sorted by row_id."""
    probs = probabilities(frame, temperatures)
    out = pd.DataFrame(probs, columns=list(PROBABILITY_COLUMNS))
    out.insert(0, "row_id", frame["row_id"].to_numpy())
    return out.sort_values("row_id", kind="stable").reset_index(drop=True)


assert all(c.family.value for c in Condition)
