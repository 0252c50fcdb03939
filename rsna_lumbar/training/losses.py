"""The training loss is the competition metric, made differentiable.

* :func:`weighted_ce_parts` — one family's weighted cross-entropy, class weights 1/2/4 by the
  *true* grade. ``numerator / denominator`` = ``Σ w_y·(−log p_y) / Σ w_y`` is exactly the metric's
  group loss (and PyTorch's ``cross_entropy(weight=w, reduction='mean')``).
* :func:`any_severe_parts` — the any_severe_spinal term: per study, ``q = max`` over its labelled
  spinal levels of ``p_severe``, target "any level Severe", weight = the largest level weight;
  weighted binary log loss. Because a dataset item is a whole study, the five spinal levels of a
  study are always in the same batch and this is the metric's term, not a proxy.
* :func:`metric_loss` — the mean of the terms present, as the metric averages its four terms.

Each part returns ``(numerator, denominator)`` so that distributed training can sum the
denominators over processes (``loop.py``) and the loss stays the weighted mean of the global
batch rather than a mean of per-process means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Parts = tuple[torch.Tensor, torch.Tensor]


def weighted_ce_parts(logits: torch.Tensor, labels: torch.Tensor, class_weights) -> Parts:
    """``(Σ w·CE, Σ w)`` over rows with a label ≥ 0.

    Args:
        logits: ``(N, 3)``.
        labels: ``(N,)`` int, −1 = ignore.
        class_weights: 3 weights (1, 2, 4 for the metric).
    """
    weights = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
    valid = labels >= 0
    if not valid.any():
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    y = labels[valid]
    losses = F.cross_entropy(logits[valid].float(), y, reduction="none")
    w = weights[y]
    return (w * losses).sum(), w.sum()


def any_severe_parts(logits: torch.Tensor, labels: torch.Tensor, class_weights) -> Parts:
    """``(Σ_s w_s·BCE(q_s, y_s), Σ_s w_s)`` over studies with at least one labelled spinal level.

    Args:
        logits: ``(B, L, 3)`` spinal logits of ``B`` studies × ``L`` levels.
        labels: ``(B, L)`` int, −1 = unlabelled (left out of the max, as the metric ignores it).
        class_weights: 3 weights.
    """
    weights = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
    valid = labels >= 0
    severe = torch.softmax(logits.float(), dim=-1)[..., 2]
    q = severe.masked_fill(~valid, 0.0).amax(dim=1)
    y = ((labels == 2) & valid).any(dim=1).float()
    w = weights[labels.clamp(min=0)].masked_fill(~valid, 0.0).amax(dim=1)
    keep = valid.any(dim=1)
    if not keep.any():
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    q = q[keep].clamp(1e-7, 1 - 1e-7)
    bce = -(y[keep] * torch.log(q) + (1 - y[keep]) * torch.log1p(-q))
    return (w[keep] * bce).sum(), w[keep].sum()


def loss_parts(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
               class_weights, any_severe_weight: float) -> dict[str, Parts]:
    """All terms of a batch.

    Args:
        logits: family → ``(B, N_f, 3)``.
        labels: family → ``(B, N_f)``.
    """
    parts = {
        f: weighted_ce_parts(lg.reshape(-1, 3), labels[f].reshape(-1), class_weights)
        for f, lg in logits.items()
    }
    if "spinal" in logits and any_severe_weight > 0:
        num, den = any_severe_parts(logits["spinal"], labels["spinal"], class_weights)
        parts["any_severe_spinal"] = (num * any_severe_weight, den)
    return parts


def metric_loss(parts: dict[str, Parts], denominators: dict[str, torch.Tensor] | None = None,
                scale: float = 1.0) -> torch.Tensor:
    """Mean over terms of ``numerator / denominator`` (global denominators if given) × ``scale``."""
    terms = []
    for name, (num, den) in parts.items():
        den = denominators[name] if denominators is not None else den
        if float(den) > 0:
            terms.append(num / den)
    if not terms:
        return next(iter(parts.values()))[0] * 0.0
    return torch.stack(terms).mean() * scale
