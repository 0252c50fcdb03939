"""The batch forward pass: a severity network over studies, shared by training and prediction.

* :func:`forward_batch` — a network on one collated batch
  (:func:`rsna_lumbar.models.dataset.collate`) → ``{family: logits float32 (B, N_f, 3)}``.
* :func:`predict_logits` — a network over a :class:`~rsna_lumbar.models.dataset.StudyDataset` →
  ``{family: (logits (n, N_f, 3), predicted (n, N_f) bool)}`` plus the study order.
* :func:`softmax` — logits ``(..., 3)`` → probabilities, divided by a temperature first.
"""

from __future__ import annotations

import numpy as np
import torch

from rsna_lumbar.devices import autocast
from rsna_lumbar.models.dataset import collate, family_slots, graded_slots


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
        ``(study_ids, {family: (logits float32 (n, N_f, 3), predicted bool (n, N_f))})``;
        ``predicted``: the slots the network grades (:func:`graded_slots`), the rest are priors.
    """
    model.eval()
    indices = list(range(len(dataset))) if indices is None else list(indices)
    studies, chunks = [], {f: ([], []) for f in dataset.families}
    for start in range(0, len(indices), batch_size):
        batch = collate([dataset[i] for i in indices[start:start + batch_size]])
        logits = forward_batch(model, batch, device, amp)
        studies.extend(int(s) for s in batch["study_id"])
        graded = graded_slots({f: m.any(dim=-1) for f, m in batch["mask"].items()},
                              getattr(model, "level_context", False))
        for f in dataset.families:
            chunks[f][0].append(logits[f].cpu().numpy())
            chunks[f][1].append(graded[f].numpy())
    out = {}
    for f, (lg, pr) in chunks.items():
        n = len(family_slots(f))
        out[f] = (np.concatenate(lg) if lg else np.zeros((0, n, 3), np.float32),
                  np.concatenate(pr) if pr else np.zeros((0, n), bool))
    return studies, out


def softmax(logits: np.ndarray, temperature=1.0) -> np.ndarray:
    """Probabilities of ``logits`` ``(..., 3)`` divided by ``temperature`` (broadcast), float64."""
    z = np.asarray(logits, np.float64) / np.asarray(temperature, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
