"""MR signal of the phantom's tissues: T1, T2 and STIR contrast, texture, coil bias and noise.

Signal levels are relative to CSF on T2 (= 1). The T2 values sit inside the ranges measured on
the five real exams by :mod:`rsna_lumbar.synth.realism` (disc, nucleus, marrow, fat, muscle as
ratios to CSF); T1 and STIR follow textbook relations: on T1 CSF is dark, fat and fatty marrow
bright; on STIR fat and marrow are dark and fluid bright. Each study draws its own jitter.
"""

from __future__ import annotations

import numpy as np

from rsna_lumbar.synth.phantom import Tissue

SEQUENCES = ("T1", "T2", "STIR")

#                 T1     T2     STIR   texture amplitude
_TABLE = {
    Tissue.AIR: (0.00, 0.00, 0.00, 0.0),
    Tissue.FAT: (1.00, 0.85, 0.07, 0.05),
    Tissue.MUSCLE: (0.30, 0.17, 0.22, 0.10),
    Tissue.MARROW: (0.68, 0.33, 0.12, 0.14),
    Tissue.CORTEX: (0.05, 0.04, 0.04, 0.0),
    Tissue.POST_BONE: (0.55, 0.32, 0.12, 0.15),
    Tissue.ANNULUS: (0.28, 0.20, 0.22, 0.05),
    Tissue.CSF: (0.12, 1.00, 1.00, 0.02),
    Tissue.NERVE: (0.36, 0.30, 0.35, 0.03),
    Tissue.LIGAMENT: (0.08, 0.07, 0.08, 0.05),
    Tissue.VESSEL: (0.07, 0.05, 0.08, 0.0),
    Tissue.VISCERA: (0.40, 0.32, 0.35, 0.35),
    Tissue.FACET_FLUID: (0.18, 0.45, 0.50, 0.0),
}
_NUCLEUS_HEALTHY = (0.38, 0.52, 0.70)
_NUCLEUS_DEGENERATE = (0.28, 0.16, 0.22)


def intensity_table(
    rng: np.random.Generator, sequence: str, degeneration: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-tissue-code mean signal and texture amplitude for one series, shapes (256,) each.

    Args:
        rng: the series' generator (per-study and per-series jitter).
        sequence: ``T1``, ``T2`` or ``STIR``.
        degeneration: (8,) disc degeneration in [0, 1], darkening nucleus ``NUCLEUS + j`` on
            T2/STIR and shrinking its T1 contrast.
    """
    col = SEQUENCES.index(sequence)
    mean = np.zeros(256, np.float32)
    amp = np.zeros(256, np.float32)
    for tissue, row in _TABLE.items():
        mean[tissue] = row[col] * rng.uniform(0.9, 1.1)
        amp[tissue] = row[3]
    if sequence == "T2":
        mean[Tissue.FAT] = rng.uniform(0.5, 1.75)  # fast spin echo fat: bright (real 0.51–1.75)
    for j, deg in enumerate(degeneration):
        healthy, worn = _NUCLEUS_HEALTHY[col], _NUCLEUS_DEGENERATE[col]
        mean[Tissue.NUCLEUS + j] = (healthy + (worn - healthy) * deg) * rng.uniform(0.9, 1.1)
        mean[Tissue.NUCLEUS_EDGE + j] = (mean[Tissue.NUCLEUS + j] + mean[Tissue.ANNULUS]) / 2
        amp[Tissue.NUCLEUS + j] = amp[Tissue.NUCLEUS_EDGE + j] = 0.06
    return mean, amp


def texture(points: np.ndarray, waves: np.ndarray) -> np.ndarray:
    """Smooth zero-mean texture in [-1, 1] at LPS points (..., 3); same field in every series.

    ``waves`` (K, 4): wave vector in rad/mm (LPS) and phase; the field is the mean of the
    cosines, so a tissue looks the same wherever a slice cuts it.
    """
    phase = points.astype(np.float32) @ waves[:, :3].T.astype(np.float32) + waves[:, 3].astype(np.float32)
    return np.cos(phase).mean(axis=-1) * np.sqrt(2.0, dtype=np.float32)


def plane_texture(origin: np.ndarray, step_r: np.ndarray, step_c: np.ndarray,
                  shape: tuple[int, int], waves: np.ndarray) -> np.ndarray:
    """:func:`texture` on the plane grid ``origin + r * step_r + c * step_c`` (LPS mm), shape
    ``(R, C)`` float32, without evaluating a cosine per pixel.

    On a plane each wave's phase is ``p0 + r * a + c * b``, and ``cos(p0 + r a + c b) =
    cos(p0 + r a) cos(c b) - sin(p0 + r a) sin(c b)``: the field is one (R, 2K) @ (2K, C) product.
    """
    k = waves[:, :3]
    rows = np.arange(shape[0])[:, None] * (k @ step_r) + (k @ origin + waves[:, 3])
    cols = np.arange(shape[1])[:, None] * (k @ step_c)
    left = np.concatenate([np.cos(rows), -np.sin(rows)], axis=1)
    right = np.concatenate([np.cos(cols), np.sin(cols)], axis=1).T
    return (left @ right * (np.sqrt(2.0) / len(waves))).astype(np.float32)


def bias_field(points: np.ndarray, coil_centre: np.ndarray, reach: float) -> np.ndarray:
    """Multiplicative receive-coil sensitivity at LPS points (...,3): bright near a posterior
    spine coil at ``coil_centre`` (LPS), falling off over ``reach`` mm (about 110–200)."""
    dist = np.linalg.norm(points - coil_centre, axis=-1)
    return (0.55 + 0.6 * np.exp(-((dist / reach) ** 2))).astype(np.float32)


def plane_bias_field(origin: np.ndarray, step_r: np.ndarray, step_c: np.ndarray,
                     shape: tuple[int, int], coil_centre: np.ndarray, reach: float) -> np.ndarray:
    """:func:`bias_field` on the plane grid of :func:`plane_texture`, shape (R, C) float32.

    With orthogonal row and column steps (as in every DICOM plane) the squared distance to the
    coil is a row term plus a column term, so the Gaussian is an outer product.
    """
    e = np.asarray(origin, np.float64) - coil_centre
    r = np.arange(shape[0], dtype=np.float64)
    c = np.arange(shape[1], dtype=np.float64)
    along_r = (e @ e + 2 * r * (e @ step_r) + r * r * (step_r @ step_r)) / reach**2
    along_c = (2 * c * (e @ step_c) + c * c * (step_c @ step_c)) / reach**2
    gauss = np.exp(-along_r)[:, None] * np.exp(-along_c)[None, :]
    return (0.55 + 0.6 * gauss).astype(np.float32)


def add_rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of signal plus complex Gaussian noise of standard deviation ``sigma``; float32.

    The Gaussian draws come from OpenCV's generator (about 3× faster than NumPy's), seeded from
    ``rng``, so the result is still a function of ``rng``'s state (for one OpenCV version).
    """
    import cv2

    signal = np.asarray(signal, np.float32)
    noise = np.empty((2, signal.size), np.float32)
    cv2.setRNGSeed(int(rng.integers(1, 2**31)))
    cv2.randn(noise, 0.0, float(sigma))
    real = noise[0].reshape(signal.shape)
    real += signal
    imag = noise[1].reshape(signal.shape)
    return np.sqrt(real * real + imag * imag)
