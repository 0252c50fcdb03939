"""One study's lumbar anatomy: its parameters, and the curved spine frame it is defined in.

The phantom lives in patient space (DICOM LPS, mm). Every structure is described in a
*spine frame* ``(u, t, d)`` that follows the lordotic curve:

* ``u``: lateral offset from the mid-sagittal plane, mm; ``u > 0`` is the patient's **left**
  (LPS +x before the study's small rotation).
* ``t``: arc length along the curve of the vertebral-body centres, mm, increasing cranially;
  ``t = 0`` at the centre of the L5/S1 disc.
* ``d``: signed distance from that curve in the sagittal plane, mm; ``d > 0`` is posterior.

The curve is a circular arc (constant lordotic curvature ``kappa``) from the top of S1 to mid
L3, continued by straight lines beyond both ends (the lordosis bends mostly at L3–S1; the
thoracolumbar spine and the sacrum are nearly straight), so that the map between LPS and
``(u, t, d)`` is closed-form in both directions (:meth:`Spine.to_local`,
:meth:`Spine.to_world`). Discs are perpendicular to the curve; a patient rotation ``rotation``
(a few degrees) and a position ``origin`` place it in LPS.

Indexing of the per-segment arrays (cranial → caudal):

* discs ``j = 0..7``: T10/T11, T11/T12, T12/L1, L1/L2, L2/L3, L3/L4, L4/L5, L5/S1
  (the competition levels are ``j = 3..7``, see :data:`LUMBAR_DISCS`);
* bodies ``b = 0..8``: T10, T11, T12, L1, L2, L3, L4, L5, sacrum; disc ``j`` lies between
  bodies ``j`` and ``j + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scipy.spatial.transform import Rotation

N_DISCS = 8
N_BODIES = 9
LUMBAR_DISCS = (3, 4, 5, 6, 7)
"""Disc indices of the five competition levels L1/L2 … L5/S1 (in :class:`Level` order)."""
DISC_TSS = (81, 82, 91, 92, 93, 94, 95, 100)
"""TotalSpineSeg labels of discs ``j = 0..7`` (``docs/totalspineseg.md``, "Label maps")."""
BODY_TSS = (30, 31, 32, 41, 42, 43, 44, 45, 50)
"""TotalSpineSeg labels of bodies ``b = 0..8`` (T10 … L5, sacrum)."""

# Typical sizes (mm) of bodies b = 0..8 and discs j = 0..7 before per-study scaling; tuned so
# that :mod:`rsna_lumbar.synth.realism` measures the phantom inside the real exams' range.
_BODY_HEIGHT = np.array([25.0, 26.0, 27.0, 28.5, 29.3, 29.7, 29.5, 28.5, 0.0])
_DISC_HEIGHT = np.array([5.0, 5.4, 6.0, 7.0, 7.7, 8.3, 8.6, 7.8])
_BODY_HALF_DEPTH = np.array([13.0, 13.5, 14.0, 14.6, 15.2, 15.6, 15.9, 15.9, 15.0])
_BODY_HALF_WIDTH = np.array([17.0, 18.0, 19.0, 20.5, 21.5, 23.0, 24.0, 25.0, 24.0])
_TRANSVERSE_REACH = np.array([30.0, 30.0, 28.0, 34.0, 42.0, 50.0, 46.0, 44.0, 0.0])


@dataclass(frozen=True)
class Spine:
    """Geometry and tissue state of one study's spine (all lengths mm, angles radians).

    Arrays: ``disc_t``, ``disc_h``, ``degeneration`` shape (8,) per disc ``j``; ``body_h``,
    ``half_depth``, ``half_width``, ``transverse`` shape (9,) per body ``b``;
    ``spinal``, shape (5,), and ``foraminal``/``subarticular``, shape (2, 5) (side 0 = left,
    1 = right), the anatomical narrowing fractions in [0, 1) per competition level.
    """

    origin: np.ndarray  # (3,) LPS position of the L5/S1 disc centre
    rotation: np.ndarray  # (3, 3) spine frame axes (x, y, z before bending) → LPS
    theta0: float  # tangent angle at t = 0 (negative: L5/S1 faces anteriorly-up)
    kappa: float  # lordotic curvature, 1/mm
    disc_t: np.ndarray
    disc_h: np.ndarray
    body_h: np.ndarray
    half_depth: np.ndarray
    half_width: np.ndarray
    transverse: np.ndarray
    degeneration: np.ndarray
    canal_half_width: float  # bony canal, mm
    canal_depth: float  # bony canal antero-posterior depth, mm
    sac_half_width: float  # dural sac
    sac_half_depth: float
    back_depth: float  # posterior skin distance from the body centre line
    body_half_width: float  # patient outline
    body_half_depth: float
    fat: float  # subcutaneous fat thickness
    spinal: np.ndarray
    foraminal: np.ndarray
    subarticular: np.ndarray
    waves: np.ndarray = field(repr=False)  # (K, 4): wave vector (LPS, rad/mm) and phase

    # -- frame ---------------------------------------------------------------------------
    @property
    def arc_range(self) -> tuple[float, float]:
        """``t`` interval of the circular arc, from the top of S1 to mid L3; the curve is a
        straight line beyond either end (the lordosis bends mostly at L3–S1)."""
        return float(-self.disc_h[-1] / 2 - 8.0), float(self.body_t[5])

    def _curve(self, t: np.ndarray, kappa: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Curve point (y, z), tangent angle theta, and arc-clipped ``t`` for ``t`` (...)."""
        lo, hi = self.arc_range
        tc = np.clip(t, lo, hi)
        theta = self.theta0 + kappa * tc
        cy, cz = np.cos(self.theta0) / kappa, -np.sin(self.theta0) / kappa
        y = cy - np.cos(theta) / kappa + (t - tc) * np.sin(theta)
        z = cz + np.sin(theta) / kappa + (t - tc) * np.cos(theta)
        return np.stack([y, z], -1), theta, tc

    def _unbend(self, qy: np.ndarray, qz: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
        """``t, d`` of points whose rotated (pre-bending) coordinates are ``qy, qz``.

        On the arc: angle and distance about its centre. Beyond an end: distance along and
        across the end's tangent line, for points past the line through the end's normal.
        """
        f = np.dtype(dtype).type
        rho = f(1.0 / self.kappa)
        cy, cz = f(np.cos(self.theta0) / self.kappa), f(-np.sin(self.theta0) / self.kappa)
        vy, vz = qy - cy, qz - cz
        t = (np.arctan2(vz, -vy) - f(self.theta0)) * f(rho)
        d = rho - np.hypot(vy, vz)
        for end, sign in zip(self.arc_range, (-1.0, 1.0)):
            (py, pz), theta, _ = self._curve(np.float64(end), self.kappa)
            ty, tz = f(np.sin(theta)), f(np.cos(theta))
            dy, dz = qy - f(py), qz - f(pz)
            along = dy * ty + dz * tz
            past = np.nonzero(along * f(sign) > 0)
            t[past] = f(end) + along[past]
            d[past] = (dy * tz - dz * ty)[past]
        return t, d

    def to_local(self, points: np.ndarray):
        """LPS points (..., 3) → spine frame ``u, t, d`` (each float32 of shape (...))."""
        q = (np.asarray(points, dtype=np.float64) - self.origin) @ self.rotation
        t, d = self._unbend(q[..., 1], q[..., 2], np.float64)
        return q[..., 0].astype(np.float32), t.astype(np.float32), d.astype(np.float32)

    def frame_coords(self, points: np.ndarray) -> tuple[np.ndarray, ...]:
        """Fast float32 ``u, t, d`` plus the outline depth ``d_body`` of LPS points (N, 3).

        Same ``u, t, d`` as :meth:`to_local` (to ~0.01 mm). ``d_body`` is the antero-posterior
        distance from the L3 body centre, bent towards the spine curve by 25 %: the patient's
        outline follows the lordosis only loosely.
        """
        shift = (np.asarray(points, np.float32) - self.origin.astype(np.float32))
        rot = self.rotation.astype(np.float32)
        qx, qy, qz = (shift[:, 0] * rot[0, i] + shift[:, 1] * rot[1, i] + shift[:, 2] * rot[2, i]
                      for i in range(3))
        return self._frame_coords(qx, qy, qz)

    def plane_frame_coords(self, origin: np.ndarray, step_r: np.ndarray, step_c: np.ndarray,
                           shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """:meth:`frame_coords` of the grid ``origin + r * step_r + c * step_c`` (LPS mm),
        ``r < shape[0]``, ``c < shape[1]``, flattened row by row, without building its points."""
        q0, qr, qc = (np.asarray(v, np.float64) @ self.rotation
                      for v in (np.asarray(origin) - self.origin, step_r, step_c))
        r = np.arange(shape[0], dtype=np.float32)[:, None]
        c = np.arange(shape[1], dtype=np.float32)[None, :]
        qx, qy, qz = ((np.float32(q0[i]) + r * np.float32(qr[i]) + c * np.float32(qc[i])).reshape(-1)
                      for i in range(3))
        return self._frame_coords(qx, qy, qz)

    def _frame_coords(self, qx, qy, qz) -> tuple[np.ndarray, ...]:
        t, d = self._unbend(qy, qz, np.float32)
        rho = np.float32(1.0 / self.kappa)
        cy, cz = np.float32(np.cos(self.theta0) * rho), np.float32(-np.sin(self.theta0) * rho)
        l3 = (self.to_world(0.0, self.body_t[5], 0.0) - self.origin) @ self.rotation
        vz_near = np.clip(qz - cz, np.float32(l3[2] - cz - 90), np.float32(l3[2] - cz + 90))
        spine_y = cy - np.sqrt(np.maximum(rho**2 - vz_near**2, 0.0))
        d_body = qy - np.float32(0.75 * l3[1]) - np.float32(0.25) * spine_y
        return qx, t, d, d_body

    def to_world(self, u, t, d) -> np.ndarray:
        """Spine frame ``u, t, d`` (broadcastable arrays) → LPS points (..., 3) float64."""
        u, t, d = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (u, t, d)))
        yz, theta, _ = self._curve(t, self.kappa)
        y = yz[..., 0] + d * np.cos(theta)
        z = yz[..., 1] - d * np.sin(theta)
        return np.stack([u, y, z], -1) @ self.rotation.T + self.origin

    def axes(self, t: float) -> np.ndarray:
        """(3, 3) LPS unit vectors (columns): lateral-left ``e_u``, cranial ``e_t``, posterior ``e_d``."""
        _, theta, _ = self._curve(np.float64(t), self.kappa)
        local = np.array(
            [[1.0, 0.0, 0.0], [0.0, np.sin(theta), np.cos(theta)], [0.0, np.cos(theta), -np.sin(theta)]]
        ).T
        return self.rotation @ local

    # -- per-segment helpers -------------------------------------------------------------
    @property
    def body_t(self) -> np.ndarray:
        """(9,) ``t`` of each body's centre (sacrum: centre of S1)."""
        top = np.concatenate([[self.disc_t[0] + self.disc_h[0] / 2 + self.body_h[0]],
                              self.disc_t - self.disc_h / 2])
        bottom = np.concatenate([self.disc_t + self.disc_h / 2, [self.disc_t[-1] - 40.0]])
        return (top + bottom) / 2

    def lumbar_disc_t(self) -> np.ndarray:
        """(5,) ``t`` of the competition levels' disc centres, L1/L2 … L5/S1."""
        return self.disc_t[list(LUMBAR_DISCS)]


def _latent_to_fraction(z: np.ndarray) -> np.ndarray:
    """Latent severity → anatomical narrowing fraction in [0, 0.85) (monotonic, smooth)."""
    return 0.85 / (1.0 + np.exp(-2.2 * (np.asarray(z) - 1.5)))


def sample_spine(rng: np.random.Generator, latent: np.ndarray, degeneration: np.ndarray) -> Spine:
    """Draw one study's anatomy.

    Args:
        rng: the study's generator.
        latent: (5, 5) latent severities, rows in :data:`~rsna_lumbar.vocabulary.CONDITIONS`
            order (spinal, left/right foraminal, left/right subarticular), columns L1/L2 … L5/S1.
        degeneration: (5,) disc degeneration in [0, 1] of the competition levels.
    """
    size = rng.uniform(0.92, 1.08)
    deg = np.concatenate([rng.uniform(0.0, 0.3, 3), degeneration])
    disc_h = _DISC_HEIGHT * size * rng.uniform(0.9, 1.1, N_DISCS) * (1.0 - 0.45 * deg)
    body_h = _BODY_HEIGHT * size * rng.uniform(0.96, 1.04, N_BODIES)
    disc_t = np.zeros(N_DISCS)
    for j in range(N_DISCS - 2, -1, -1):
        disc_t[j] = disc_t[j + 1] + disc_h[j + 1] / 2 + body_h[j + 1] + disc_h[j] / 2
    lordosis = np.radians(rng.uniform(28.0, 55.0))  # between the L1/L2 and L5/S1 discs
    l3_centre = (disc_t[4] - disc_h[4] / 2 + disc_t[5] + disc_h[5] / 2) / 2  # arc's upper end
    kappa = lordosis / l3_centre
    theta0 = -0.75 * lordosis + np.radians(rng.normal(0.0, 4.0))
    angles = np.radians(rng.normal(0.0, [2.0, 2.5, 3.0]))  # roll (about y), tilt, axial twist
    rotation = Rotation.from_euler("yxz", angles).as_matrix()
    origin = np.array([rng.uniform(-15, 15), rng.uniform(-20, 40), rng.uniform(-150, -60)])
    fractions = _latent_to_fraction(latent)
    k = rng.integers(6, 10)
    wave_dirs = rng.normal(size=(k, 3))
    wave_dirs /= np.linalg.norm(wave_dirs, axis=1, keepdims=True)
    wavelengths = rng.uniform(4.0, 30.0, size=(k, 1))
    waves = np.concatenate([wave_dirs * 2 * np.pi / wavelengths, rng.uniform(0, 2 * np.pi, (k, 1))], 1)
    body_half_width = rng.uniform(140, 180)
    return Spine(
        origin=origin,
        rotation=rotation,
        theta0=float(theta0),
        kappa=float(kappa),
        disc_t=disc_t,
        disc_h=disc_h,
        body_h=body_h,
        half_depth=_BODY_HALF_DEPTH * size * rng.uniform(0.95, 1.05),
        half_width=_BODY_HALF_WIDTH * size * rng.uniform(0.94, 1.06),
        transverse=_TRANSVERSE_REACH * size,
        degeneration=deg,
        canal_half_width=rng.uniform(10.5, 12.5) * size,
        canal_depth=rng.uniform(15.0, 19.0) * size,
        sac_half_width=rng.uniform(8.5, 10.5) * size,
        sac_half_depth=rng.uniform(6.0, 7.5) * size,
        back_depth=rng.uniform(65.0, 115.0),  # real exams: skin 48–64 mm behind the sac
        body_half_width=body_half_width,
        body_half_depth=rng.uniform(105.0, 130.0),
        fat=rng.uniform(3.0, 20.0),
        spinal=fractions[0],
        foraminal=fractions[1:3],
        subarticular=fractions[3:5],
        waves=waves,
    )
