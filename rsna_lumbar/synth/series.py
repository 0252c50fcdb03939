"""Acquisition planning and rendering of one study's series.

A :class:`Stack` is a set of parallel slices with one ``ImageOrientationPatient``; a
:class:`SeriesPlan` is one DICOM series (one or more stacks, one ``SeriesDescription``).
Rendering samples the phantom at the world position of every pixel centre, computed from the
stack's geometry through :mod:`rsna_lumbar.geometry.affine`, so the DICOM geometry and the
pixels agree by construction. Pixel arrays are ``(S, R, C)`` = ``pixels[slice, row, col]``.

Real-data habits reproduced (``docs/competition.md``): sagittal series of 15–20 slices,
3.3–4.4 mm apart, 0.5–0.9 mm pixels, varied matrices, left-to-right or right-to-left
instance order; axial T2 either one stack or one chunk per disc angled to it, sometimes split
over two series and sometimes missing the upper levels; rare instance-number gaps and rare
sagittal series holding a second stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from rsna_lumbar.geometry.affine import plane_normal, slice_affine, voxel_to_world
from rsna_lumbar.synth.anatomy import LUMBAR_DISCS, Spine
from rsna_lumbar.synth.contrast import (
    add_rician_noise, intensity_table, plane_bias_field, plane_texture,
)
from rsna_lumbar.synth.phantom import label_plane
from rsna_lumbar.vocabulary import SeriesDescription

RENDER_MM = 1.1  # the phantom is sampled at this spacing (or coarser pixels) and resized


@dataclass
class Stack:
    """Parallel slices: ``positions`` (S, 3) LPS IPP in acquisition order, ``instances`` (S,)."""

    orientation: np.ndarray  # (6,) row cosine, column cosine
    positions: np.ndarray
    instances: np.ndarray
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm
    thickness: float
    spacing: float

    def affine(self, k: int) -> np.ndarray:
        """4×4 affine of slice ``k`` (voxel (col, row, 0) → LPS)."""
        return slice_affine(self.orientation, self.positions[k], self.pixel_spacing)


@dataclass
class SeriesPlan:
    series_id: int
    description: SeriesDescription
    sequence: str  # T1, T2 or STIR
    stacks: list[Stack] = field(default_factory=list)


def _orthonormal(row: np.ndarray, normal: np.ndarray) -> np.ndarray:
    row = row - (row @ normal) * normal
    return row / np.linalg.norm(row)


def _jitter(vec: np.ndarray, rng: np.random.Generator, degrees: float) -> np.ndarray:
    out = vec + rng.normal(0.0, np.radians(degrees), 3)
    return out / np.linalg.norm(out)


def _matrix(rng, fov: float, options, scale: float) -> tuple[int, float]:
    sizes = [n for n in options if 0.5 <= fov / n <= 0.9] or [options[-1]]
    n = int(rng.choice(sizes))
    n_scaled = max(int(round(n / scale / 16)) * 16, 64)
    return n_scaled, fov / n_scaled


def _stack(rng, centre, row, col, offsets, fov_r, fov_c, options, scale, thickness, spacing):
    rows, p_r = _matrix(rng, fov_r, options, scale)
    cols, p_c = rows, p_r
    if rng.random() < 0.2:  # rectangular field of view, square pixels
        cols = max(int(rows * fov_c / fov_r / 16) * 16, 64)
    normal = np.cross(row, col)
    corner = centre - (cols - 1) / 2 * p_c * row - (rows - 1) / 2 * p_r * col
    positions = corner[None] + offsets[:, None] * normal[None]
    return Stack(np.concatenate([row, col]), positions, np.zeros(len(offsets), int), rows, cols,
                 (p_r, p_c), thickness, spacing)


def plan_sagittal(rng, spine: Spine, series_id: int, description, sequence, scale: float) -> SeriesPlan:
    axes = spine.axes(spine.body_t[5])
    lateral = _jitter(axes[:, 0] * 0.5 + np.array([1.0, 0, 0]) * 0.5, rng, 1.5)
    row = _orthonormal(np.array([0.0, 1.0, 0.0]), lateral)
    col = np.cross(row, lateral)
    centre = spine.to_world(rng.normal(0, 2.0), spine.body_t[5] + rng.normal(-5, 10), rng.normal(12, 8))
    n = int(rng.integers(15, 21))
    spacing = float(rng.uniform(3.3, 4.4))
    offsets = (np.arange(n) - (n - 1) / 2) * spacing
    fov = float(rng.uniform(220, 280))  # about T11 to the sacrum
    stack = _stack(rng, centre, row, col, offsets, fov, fov * 0.875, (320, 384, 448, 512), scale,
                   spacing * float(rng.uniform(0.85, 1.0)), spacing)
    plan = SeriesPlan(series_id, description, sequence, [stack])
    if rng.random() < 0.01:  # a repeated acquisition inside the same series
        twin = _stack(rng, centre + lateral * 1.5, row, col, offsets, fov, fov, (320, 384), scale,
                      stack.thickness, spacing)
        plan.stacks.append(twin)
    return plan


def plan_axial(rng, spine: Spine, series_ids: list[int], covered: list[int], scale: float) -> list[SeriesPlan]:
    """Axial T2 series covering the competition levels ``covered`` (indices 0..4)."""
    fov = float(rng.uniform(160, 220))
    options = (256, 320, 384, 448)
    spacing = float(rng.uniform(3.6, 4.8))
    stacks = []
    mode = "single" if rng.random() < 0.35 else "chunks"
    d_centre = float(np.mean(spine.half_depth[3:8])) + rng.normal(8, 4)
    if mode == "single":
        t_hi = spine.disc_t[LUMBAR_DISCS[covered[0]]] + rng.uniform(8, 20)
        t_lo = spine.disc_t[LUMBAR_DISCS[covered[-1]]] - rng.uniform(8, 20)
        t_mid = (t_hi + t_lo) / 2
        axes = spine.axes(t_mid)
        normal = _jitter(axes[:, 1], rng, 2.0)
        n = int(np.ceil((t_hi - t_lo) / spacing)) + 1
        offsets = (np.arange(n) - (n - 1) / 2) * spacing
        row = _orthonormal(axes[:, 0], normal)
        col = np.cross(normal, row)
        centre = spine.to_world(rng.normal(0, 3), t_mid, d_centre)
        stacks.append(_stack(rng, centre, row, col, offsets, fov, fov, options, scale, spacing * 0.9, spacing))
    else:
        first = _stack(rng, np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.zeros(1),
                       fov, fov, options, scale, 1, 1)
        for lv in covered:
            t = spine.disc_t[LUMBAR_DISCS[lv]] + rng.normal(0, 1.5)
            axes = spine.axes(t)
            normal = _jitter(axes[:, 1], rng, 2.0)
            row = _orthonormal(axes[:, 0], normal)
            col = np.cross(normal, row)
            n = int(rng.integers(3, 7))
            offsets = (np.arange(n) - (n - 1) / 2 + rng.uniform(-0.5, 0.5)) * spacing
            centre = spine.to_world(rng.normal(0, 3), t, d_centre)
            st = _stack(rng, centre, row, col, offsets, fov, fov, options, scale, spacing * 0.9, spacing)
            st.rows, st.cols, st.pixel_spacing = first.rows, first.cols, first.pixel_spacing
            corner = centre - (st.cols - 1) / 2 * st.pixel_spacing[1] * row - (st.rows - 1) / 2 * st.pixel_spacing[0] * col
            st.positions = corner[None] + offsets[:, None] * normal[None]
            stacks.append(st)
    head_first = rng.random() < 0.7
    for st in stacks:
        if head_first:  # acquisition order: cranial slice first
            order = np.argsort(-(st.positions @ plane_normal(st.orientation)))
            st.positions = st.positions[order]
    if mode == "chunks" and len(stacks) >= 2 and rng.random() < 0.15:
        cut = len(stacks) // 2
        groups = [stacks[:cut], stacks[cut:]]
    else:
        groups = [stacks]
    return [SeriesPlan(sid, SeriesDescription.AXIAL_T2, "T2", g) for sid, g in zip(series_ids, groups)]


def number_instances(rng, plan: SeriesPlan) -> None:
    """Assign 1-based InstanceNumbers over the series' stacks, sometimes reversed, rarely gapped."""
    reverse = plan.description.is_sagittal and rng.random() < 0.5
    nxt = 1
    gap_at = int(rng.integers(2, 8)) if rng.random() < 0.01 else -1
    for st in plan.stacks:
        order = np.arange(len(st.positions))[::-1] if reverse else np.arange(len(st.positions))
        for i in order:
            if nxt == gap_at:
                nxt += int(rng.integers(1, 4))
            st.instances[i] = nxt
            nxt += 1


def render_grid(stack: Stack, k: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS origin, row step and column step (each (3,), mm) of a grid ``shape`` = (R', C')
    spanning slice ``k``'s field of view: point ``(r, c)`` is ``origin + r * row_step +
    c * col_step``.

    The grid covers the same extent as the stack's pixel grid (edges aligned, as
    ``cv2.resize`` assumes), so a render at ``shape`` resizes exactly onto the DICOM pixels.
    """
    affine = stack.affine(k)
    rr, cc = shape
    scale_r, scale_c = stack.rows / rr, stack.cols / cc
    origin = voxel_to_world(affine, np.array([0.5 * scale_c - 0.5, 0.5 * scale_r - 0.5, 0.0]))
    return origin, affine[:3, 1] * scale_r, affine[:3, 0] * scale_c


def pixel_world(stack: Stack, k: int, shape: tuple[int, int]) -> np.ndarray:
    """LPS world points (R', C', 3) of the grid of :func:`render_grid`."""
    origin, step_r, step_c = render_grid(stack, k, shape)
    return (origin + np.arange(shape[0])[:, None, None] * step_r
            + np.arange(shape[1])[None, :, None] * step_c)


def render_stack(rng, spine: Spine, stack: Stack, sequence: str, want_labels: bool):
    """Render one stack: uint16 pixels (S, R, C) and TSS labels (S, R, C) or None.

    Each slice is labelled at the render spacing (``RENDER_MM`` or the pixel spacing if
    coarser), turned into signal with the plane forms of texture and coil bias, lightly blurred,
    resized onto the pixel grid (cubic) and given Rician noise at full resolution.
    """
    mean, amp = intensity_table(rng, sequence, spine.degeneration)
    coil = spine.to_world(0.0, spine.body_t[5], spine.back_depth + 40)
    sigma = float(rng.uniform(0.012, 0.03))
    peak = float(rng.uniform(900, 3000))
    reach = float(rng.uniform(110.0, 200.0))
    rr = max(16, int(round(stack.rows * stack.pixel_spacing[0] / max(RENDER_MM, stack.pixel_spacing[0]))))
    cc = max(16, int(round(stack.cols * stack.pixel_spacing[1] / max(RENDER_MM, stack.pixel_spacing[1]))))
    pixels = np.zeros((len(stack.positions), stack.rows, stack.cols), np.uint16)
    labels = np.zeros_like(pixels, dtype=np.uint8) if want_labels else None
    near_r = np.clip(np.round((np.arange(stack.rows) + 0.5) * rr / stack.rows - 0.5), 0, rr - 1).astype(int)
    near_c = np.clip(np.round((np.arange(stack.cols) + 0.5) * cc / stack.cols - 0.5), 0, cc - 1).astype(int)
    gain = np.float32(peak / 1.2)
    for k in range(len(stack.positions)):
        origin, step_r, step_c = render_grid(stack, k, (rr, cc))
        tis, tss = label_plane(spine, origin, step_r, step_c, (rr, cc))
        sig = mean[tis] * (1 + amp[tis] * plane_texture(origin, step_r, step_c, (rr, cc), spine.waves))
        sig *= plane_bias_field(origin, step_r, step_c, (rr, cc), coil, reach)
        sig = cv2.GaussianBlur(sig, (0, 0), 0.5)
        full = cv2.resize(sig, (stack.cols, stack.rows), interpolation=cv2.INTER_CUBIC)
        full = add_rician_noise(np.maximum(full, 0, out=full), sigma, rng)
        full *= gain
        pixels[k] = np.minimum(full, 65535, out=full)  # non-negative: a magnitude
        if labels is not None:
            labels[k] = tss[near_r][:, near_c]
    return pixels, labels
