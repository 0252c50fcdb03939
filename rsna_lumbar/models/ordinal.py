"""Cumulative-link (ordinal) classifier: one severity score and two ordered cut-points.

The three grades are ordered, and the synthetic generator (``synth/severity.py``) makes them
exactly so: one latent narrowing plus reader noise, cut at two thresholds. A softmax head learns
a separate direction per grade, so the Moderate/Severe boundary is learned from the few Severe
samples alone. The cumulative link shares one score ``s`` for all grades::

    P(grade ≥ Moderate) = σ(s − c₁),   P(grade = Severe) = σ(s − c₂),   c₂ = c₁ + softplus(δ)

and returns the log-probabilities of Normal/Mild, Moderate, Severe. They act as logits
downstream: ``softmax(log p) = p``, so the loss, the calibration temperature and the OOF files
need no change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OrdinalClassifier(nn.Module):
    """``(B, D)`` features → ``(B, 3)`` log-probabilities of a cumulative-logit model."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.score = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, 1))
        self.first_cut = nn.Parameter(torch.tensor(1.0))  # c₁: Normal/Mild | Moderate
        self.gap = nn.Parameter(torch.tensor(1.0))  # softplus(δ) = c₂ − c₁ > 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        s = self.score(features).squeeze(-1).float()
        gap = F.softplus(self.gap) + 1e-4
        above_first = s - self.first_cut  # logit of P(grade ≥ Moderate)
        above_second = above_first - gap  # logit of P(grade = Severe)
        # P(Moderate) = σ(a) − σ(b) = σ(a)·σ(−b)·(1 − e^{−(a−b)}), computed in log space.
        log_moderate = (F.logsigmoid(above_first) + F.logsigmoid(-above_second)
                        + torch.log(-torch.expm1(-gap)))
        log_normal, log_severe = F.logsigmoid(-above_first), F.logsigmoid(above_second)
        return torch.stack([log_normal, log_moderate, log_severe], dim=-1)
