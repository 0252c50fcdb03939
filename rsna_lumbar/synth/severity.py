"""Latent severity, the label-noise model that grades it, and the Bayes-optimal probabilities.

Model (all seeded; one draw per study):

1. **Latent severity** ``z[c, l]`` for condition ``c`` (the five of
   :data:`~rsna_lumbar.vocabulary.CONDITIONS`) and level ``l`` (L1/L2 … L5/S1) is
   ``z = mu[c, l] + s[c, l] * eta[c, l]``, where ``eta`` is standard normal and correlated
   as degeneration is: ``eta = 0.45 G + 0.55 L_l + 0.40 F_{family, l} + 0.58 E_{c, l}``
   with a study factor ``G``, a per-level factor ``L_l`` that is AR(1) along the spine
   (correlation 0.5 between neighbouring levels), a per-(family, level) factor shared by the
   left and right sides, and an independent residual. The anatomy is a deterministic function
   of ``z`` (:func:`rsna_lumbar.synth.anatomy._latent_to_fraction`).
2. **Reader noise**: the grade a radiologist writes is the latent plus Gaussian noise
   ``e ~ N(0, NOISE[family]^2)``, cut at the thresholds ``1`` and ``2``:
   ``Normal/Mild`` if ``z + e < 1``, ``Moderate`` if ``1 <= z + e < 2``, ``Severe`` otherwise.
3. ``mu`` and ``s`` are solved in closed form so that the marginal class frequencies of
   ``z + e ~ N(mu, s^2 + NOISE^2)`` equal :data:`TARGET_FREQUENCIES` per condition and level
   (set from ``docs/competition.md``: overall shares per family, severe peaks at L4/L5).
4. **Bayes-optimal probabilities** given the latent are then exact:
   ``P(Normal/Mild) = Phi((1 - z)/noise)``, ``P(Severe) = 1 - Phi((2 - z)/noise)``, Moderate the
   rest. No predictor can beat them in expected log loss on these labels.
5. **Missing labels**: a label is NaN when its series cannot show it (subarticular levels
   the axial series do not cover) or, rarely, at random with the real per-column rates.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from rsna_lumbar.vocabulary import CONDITIONS, Family

THRESHOLDS = (1.0, 2.0)
NOISE = {Family.SPINAL: 0.30, Family.FORAMINAL: 0.40, Family.SUBARTICULAR: 0.40}
"""Reader-noise standard deviation per family, in latent units (threshold gap = 1)."""

_SPINAL = [(0.96, 0.025), (0.91, 0.05), (0.84, 0.11), (0.72, 0.15), (0.96, 0.035)]
_FORAMINAL = [(0.95, 0.04), (0.89, 0.09), (0.80, 0.17), (0.66, 0.28), (0.60, 0.31)]
_SUBARTICULAR = [(0.88, 0.09), (0.79, 0.15), (0.68, 0.22), (0.50, 0.27), (0.72, 0.22)]
_BY_FAMILY = {Family.SPINAL: _SPINAL, Family.FORAMINAL: _FORAMINAL, Family.SUBARTICULAR: _SUBARTICULAR}
TARGET_FREQUENCIES = np.array(
    [[[n, m, 1.0 - n - m] for n, m in _BY_FAMILY[c.family]] for c in CONDITIONS]
)
"""(5, 5, 3) target shares of Normal/Mild, Moderate, Severe per condition and level.
Means over levels: spinal 87.8/7.4/4.8 %, foraminal 78.0/17.8/4.2 %, subarticular
71.4/19.0/9.6 % (real: 87.8/7.5/4.8, 78.0/18.1/4.0, 71.4/19.0/9.6)."""

MISSING_RATE = np.array(  # chance of a NaN label unrelated to coverage, per condition
    [1 / 1975, 2 / 1975, 8 / 1975, 3 / 1975, 2 / 1975]
)
AXIAL_MISSING = (0.08, 0.04, 0.002, 0.002, 0.005)
"""Chance that the axial series omit a level (L1/L2 … L5/S1): the subarticular NaN rates."""


def _noise(condition_index: int) -> float:
    return NOISE[CONDITIONS[condition_index].family]


def latent_parameters() -> tuple[np.ndarray, np.ndarray]:
    """``mu``, ``s`` (5, 5) solving the target frequencies (see module docstring, item 3)."""
    lo, hi = THRESHOLDS
    mu = np.zeros((5, 5))
    s = np.zeros((5, 5))
    for c in range(5):
        for lv in range(5):
            p_normal, p_moderate, _ = TARGET_FREQUENCIES[c, lv]
            a, b = ndtri(p_normal), ndtri(p_normal + p_moderate)
            total = (hi - lo) / (b - a)
            mu[c, lv] = lo - total * a
            s[c, lv] = np.sqrt(max(total**2 - _noise(c) ** 2, 0.05))
    return mu, s


def sample_latent(rng: np.random.Generator) -> np.ndarray:
    """(5, 5) latent severities of one study (conditions × levels)."""
    g = rng.normal()
    level = np.zeros(5)
    level[0] = rng.normal()
    for i in range(1, 5):
        level[i] = 0.5 * level[i - 1] + np.sqrt(0.75) * rng.normal()
    family = {f: rng.normal(size=5) for f in Family}
    eta = np.empty((5, 5))
    for c, condition in enumerate(CONDITIONS):
        eta[c] = 0.45 * g + 0.55 * level + 0.40 * family[condition.family] + 0.58 * rng.normal(size=5)
    eta /= np.sqrt(0.45**2 + 0.55**2 + 0.40**2 + 0.58**2)
    mu, s = latent_parameters()
    return mu + s * eta


def degeneration_from_latent(latent: np.ndarray) -> np.ndarray:
    """(5,) disc degeneration in [0, 1] per level: the mean latent of the level, squashed."""
    mu, s = latent_parameters()
    score = ((latent - mu) / s).mean(axis=0) + 0.25 * np.arange(5)
    return 1.0 / (1.0 + np.exp(-1.6 * (score - 0.6)))


def bayes_probabilities(latent: np.ndarray) -> np.ndarray:
    """(..., 5, 5, 3) P(Normal/Mild, Moderate, Severe | latent) under the reader noise."""
    noise = np.array([_noise(c) for c in range(5)])[:, None]
    lo, hi = THRESHOLDS
    p_normal = ndtr((lo - latent) / noise)
    p_not_severe = ndtr((hi - latent) / noise)
    probs = np.stack([p_normal, p_not_severe - p_normal, 1.0 - p_not_severe], axis=-1)
    return np.clip(probs, 1e-7, 1.0) / np.clip(probs, 1e-7, 1.0).sum(-1, keepdims=True)


def latent_grades(latent: np.ndarray) -> np.ndarray:
    """Grade indices 0/1/2 (same shape as ``latent``) that the latent severity itself falls in:
    the grades a reader without noise would write."""
    return np.digitize(latent, THRESHOLDS)


def draw_grades(rng: np.random.Generator, latent: np.ndarray) -> np.ndarray:
    """(5, 5) grade indices 0/1/2 drawn with the reader noise."""
    noise = np.array([_noise(c) for c in range(5)])[:, None]
    return latent_grades(latent + noise * rng.normal(size=latent.shape))
