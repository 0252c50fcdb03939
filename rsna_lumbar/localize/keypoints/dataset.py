"""Tasks, the fixed-millimetre slice grid, and heatmap training samples.

Frames. A series is a :class:`~rsna_lumbar.dicom.Volume` (``pixels[slice, row, col]``, voxel
``(col, row, slice)``). Every slice is resampled, in its own plane, onto a square *canonical
grid* of ``canon_px`` pixels of ``canon_mm`` mm centred on the image centre
(:func:`canonical_stack`); ``grid_to_voxel`` (2×3) maps grid ``(u, v)`` to voxel ``(col, row)``
of the slice. Model inputs (``input_px``) are drawn from the canonical grid by a further 2×3
map (identity scale ``input_mm / canon_mm`` at test time, jittered in training), and the
input's channels are the slices ``k-1, k, k+1`` (edge-clamped) — a 2.5D input.

Targets. For a labelled point of channel ``c`` lying at fractional slice ``s`` the heatmap of
slice ``k`` holds a Gaussian (``sigma_px`` input pixels) scaled by
``exp(-((k - s) * spacing)² / (2 * slice_sigma_mm²))``: the peak value says "this point is on
this slice", which is how prediction chooses the slice (a per-slice score).

Tasks (:data:`TASKS`): ``sag_t2`` (Spinal Canal Stenosis, channel = level), ``sag_t1`` (both
Neural Foraminal Narrowing sides in one channel per level; side decided by geometry at
prediction) and ``axial`` (Subarticular Stenosis, channel = side: 0 left, 1 right; level
decided by registration at prediction).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np

from rsna_lumbar.vocabulary import Condition, Level, SeriesDescription


@dataclass(frozen=True)
class Task:
    """One keypoint task: which series, which conditions, and the grid it is seen on."""

    name: str
    description: str
    conditions: tuple[str, ...]  # Condition values
    channel: str  # "level" or "side"
    canon_px: int
    canon_mm: float
    input_px: int
    input_mm: float
    sigma_px: float = 3.0
    slice_sigma_mm: float = 2.5
    stride: int = 4  # input pixels per heatmap cell (HeatmapNet output grid)

    @property
    def n_points(self) -> int:
        return 2 if self.channel == "side" else 5

    def channel_of(self, condition: Condition, level: Level) -> int:
        if self.channel == "level":
            return level.index
        return 0 if condition.side.value == "left" else 1

    def as_config(self) -> dict:
        return {**asdict(self), "in_chans": 3, "n_points": self.n_points}

    @classmethod
    def from_config(cls, config: dict) -> Task:
        """The task :meth:`as_config` wrote (a localiser folder's ``config.json``)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.items() if k in names}
        return cls(**{**values, "conditions": tuple(values["conditions"])})

    def at_resolution(self, input_px: int | None = None, stride: int | None = None) -> Task:
        """This task seen through ``input_px`` pixels over the same field of view, its heatmap
        on a ``stride`` grid (``None``: unchanged). ``input_mm`` and ``sigma_px`` scale so the
        input covers the same millimetres and a point's Gaussian keeps its width in mm; the
        canonical grid is refined to the input's pixel size when that is finer, over the same
        field of view (``canon_px · canon_mm`` kept)."""
        task = self if stride is None else replace(self, stride=stride)
        if input_px is None or input_px == self.input_px:
            return task
        factor = input_px / self.input_px
        input_mm = self.input_mm / factor
        canon_mm = min(self.canon_mm, input_mm)
        canon_px = int(round(self.canon_px * self.canon_mm / canon_mm))
        return replace(task, input_px=input_px, input_mm=round(input_mm, 6), canon_mm=round(canon_mm, 6),
                       canon_px=canon_px, sigma_px=round(self.sigma_px * factor, 6))  # fmt: skip


TASKS: dict[str, Task] = {
    "sag_t2": Task("sag_t2", SeriesDescription.SAGITTAL_T2.value,
                   (Condition.SPINAL_CANAL_STENOSIS.value,), "level", 224, 1.4, 128, 2.2, stride=2),
    "sag_t1": Task("sag_t1", SeriesDescription.SAGITTAL_T1.value,
                   (Condition.LEFT_NEURAL_FORAMINAL_NARROWING.value,
                    Condition.RIGHT_NEURAL_FORAMINAL_NARROWING.value), "level", 224, 1.4, 128, 2.2),
    "axial": Task("axial", SeriesDescription.AXIAL_T2.value,
                  (Condition.LEFT_SUBARTICULAR_STENOSIS.value,
                   Condition.RIGHT_SUBARTICULAR_STENOSIS.value), "side", 192, 1.0, 128, 1.25),
}  # fmt: skip


def task_for(name: str, cfg) -> Task:
    """Task ``name`` at the resolution of a :class:`~.config.TrainConfig` (its ``input_px`` and
    ``stride``; 0 keeps the task's own, so default settings give :data:`TASKS` unchanged)."""
    return TASKS[name].at_resolution(cfg.input_px or None, cfg.stride or None)


def normalise(pixels: np.ndarray) -> np.ndarray:
    """Robust per-series scaling to about [0, 1]: 0.5th percentile → 0, 99.5th → 1 (float32)."""
    lo, hi = np.percentile(pixels[:, ::2, ::2], [0.5, 99.5])
    return np.clip((pixels - lo) / max(hi - lo, 1e-6), 0.0, 1.5).astype(np.float32)


def grid_to_voxel(volume, px: int, mm: float) -> np.ndarray:
    """2×3 map from a ``px``-pixel square grid of ``mm`` mm (centred) to voxel ``(col, row)``."""
    col_mm, row_mm = volume.spacing[:2]
    rows, cols = volume.shape[1:]
    centre = (px - 1) / 2
    return np.array([[mm / col_mm, 0.0, (cols - 1) / 2 - centre * mm / col_mm],
                     [0.0, mm / row_mm, (rows - 1) / 2 - centre * mm / row_mm]])  # fmt: skip


def warp(images: np.ndarray, dst_to_src: np.ndarray, px: int) -> np.ndarray:
    """Resample ``(N, H, W)`` images onto a ``px`` square grid; ``dst_to_src`` is 2×3."""
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    out = [cv2.warpAffine(np.ascontiguousarray(im), dst_to_src, (px, px), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) for im in images]  # fmt: skip
    return np.stack(out).astype(np.float32) if out else np.zeros((0, px, px), np.float32)


def canonical_stack(volume, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """All slices on the task's canonical grid → ``(float16 (S, canon_px, canon_px), 2×3 map)``."""
    m = grid_to_voxel(volume, task.canon_px, task.canon_mm)
    return warp(normalise(volume.pixels), m, task.canon_px).astype(np.float16), m


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2×3 affine ``a ∘ b`` (apply ``b`` first)."""
    a3, b3 = np.vstack([a, [0, 0, 1]]), np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def invert(a: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2]


def input_to_canon(task: Task, scale: float = 1.0, angle_deg: float = 0.0,
                   shift_mm: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:  # fmt: skip
    """2×3 map input pixel → canonical pixel; ``scale`` > 1 zooms out (more mm per pixel)."""
    s = task.input_mm / task.canon_mm * scale
    c, si = np.cos(np.radians(angle_deg)) * s, np.sin(np.radians(angle_deg)) * s
    ci, cc = (task.input_px - 1) / 2, (task.canon_px - 1) / 2
    tx = cc + shift_mm[0] / task.canon_mm - (c * ci - si * ci)
    ty = cc + shift_mm[1] / task.canon_mm - (si * ci + c * ci)
    return np.array([[c, -si, tx], [si, c, ty]])


def three_slices(stack: np.ndarray, k: int) -> np.ndarray:
    """Slices ``k-1, k, k+1`` (edge-clamped) of ``(S, H, W)`` → ``(3, H, W)``."""
    idx = np.clip([k - 1, k, k + 1], 0, len(stack) - 1)
    return stack[idx].astype(np.float32)


@dataclass
class SeriesSample:
    """One labelled series ready for training: canonical stack + points in canonical pixels.

    ``points``: float64 ``(P, 4)`` rows ``(channel, u, v, slice)`` — canonical grid column and
    row, fractional slice index. ``spacing``: slice spacing (mm).
    """

    study_id: int
    series_id: int
    stack: np.ndarray
    points: np.ndarray
    spacing: float

    def on_disk(self, folder: Path) -> SeriesSample:
        """This sample with its stack written to ``folder/{study}_{series}.npy`` and read back
        as a read-only memory map. Every process that trains on it then shares one copy in the
        page cache (pickling sends the file's name, :meth:`__reduce__`), and the stacks of a
        few thousand series need not fit in anyone's memory."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.study_id}_{self.series_id}.npy"
        np.save(path, self.stack)
        return replace(self, stack=np.load(path, mmap_mode="r"))

    def __reduce__(self):
        if isinstance(self.stack, np.memmap) and self.stack.filename:
            return _mapped_sample, (self.study_id, self.series_id, self.stack.filename, self.points,
                                    self.spacing)  # fmt: skip
        return SeriesSample, (self.study_id, self.series_id, self.stack, self.points, self.spacing)


def _mapped_sample(study_id: int, series_id: int, path: str, points: np.ndarray, spacing: float):
    """A :class:`SeriesSample` unpickled from its stack's file (:meth:`SeriesSample.on_disk`)."""
    return SeriesSample(study_id, series_id, np.load(path, mmap_mode="r"), points, spacing)


def series_sample(volume, labels, task: Task) -> SeriesSample:
    """Build a :class:`SeriesSample` from a Volume and its label rows (competition schema)."""
    stack, m = canonical_stack(volume, task)
    back = invert(m)
    pts = []
    for row in labels.itertuples():
        if int(row.instance_number) not in set(volume.instance_numbers.tolist()):
            continue
        k = volume.slice_of(int(row.instance_number))
        u, v = back @ np.array([row.x, row.y, 1.0])
        ch = task.channel_of(Condition.from_title(row.condition), Level.from_title(row.level))
        pts.append((ch, u, v, k))
    return SeriesSample(volume.study_id, volume.series_id, stack,
                        np.array(pts, float).reshape(-1, 4), float(volume.spacing[2]))  # fmt: skip


def cell_centres(cells, stride: int):
    """Input-pixel coordinates of heatmap cells (an array or tensor of indices): cell ``i``
    covers input pixels ``[stride·i, stride·i + stride)``, its centre is
    ``stride·i + (stride − 1) / 2``."""
    return cells * stride + (stride - 1) / 2


def heatmap_target(task: Task, points_uv: np.ndarray, weights: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """``(n_points, input_px/stride, input_px/stride)`` Gaussians at input-pixel ``points_uv`` (P, 2)."""
    h = task.input_px // task.stride
    target = np.zeros((task.n_points, h, h), np.float32)
    grid = cell_centres(np.arange(h), task.stride)[None]
    for (u, v), w, ch in zip(points_uv, weights, channels):
        gu = np.exp(-((grid - u) ** 2) / (2 * task.sigma_px**2))
        gv = np.exp(-((grid - v) ** 2) / (2 * task.sigma_px**2))
        target[int(ch)] = np.maximum(target[int(ch)], w * (gv.T @ gu))
    return target


def augment_intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Heavy, label-free intensity changes on ``(3, H, W)`` in about [0, 1]: gamma, a smooth
    multiplicative bias field, contrast stretch, blur/sharpen, Rician-like noise, and now and
    then a remap that swaps the order of intensity ranges (fat/fluid contrast differences)."""
    c, h, w = x.shape
    x = np.clip(x, 0, None) ** np.exp(rng.normal(0, 0.35))
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    a = rng.normal(0, 0.5, 5)
    field = np.exp(a[0] * (xx - 0.5) + a[1] * (yy - 0.5) + a[2] * (xx - 0.5) * (yy - 0.5)
                   + a[3] * (xx - 0.5) ** 2 + a[4] * (yy - 0.5) ** 2)  # fmt: skip
    x = x * field[None] * np.exp(rng.normal(0, 0.25))
    if rng.random() < 0.5:  # piecewise-linear remap: random monotone-or-not intensity curve
        knots = np.sort(rng.uniform(0, 1, 4))
        values = rng.uniform(0, 1, 6)
        values[0], values[-1] = 0.0, max(values[-1], 0.6)
        x = np.interp(x, np.r_[0.0, knots, 1.5], values).astype(np.float32)
    if rng.random() < 0.3:
        x = np.stack([cv2.GaussianBlur(ch.astype(np.float32), (0, 0), rng.uniform(0.5, 1.5)) for ch in x])
    sigma = rng.uniform(0, 0.08)
    noisy = np.sqrt((x + rng.normal(0, sigma, x.shape)) ** 2 + rng.normal(0, sigma, x.shape) ** 2)
    return noisy.astype(np.float32)


def flip_columns(task: Task) -> np.ndarray:
    """2×3 map input pixel → input pixel mirroring the columns (``u → input_px - 1 - u``)."""
    return np.array([[-1.0, 0.0, task.input_px - 1.0], [0.0, 1.0, 0.0]])


SHIFT_MM = 25.0  # random shift of the input, each axis
LEVEL_SHIFT_MM = 70.0  # row shift on level tasks: two levels either way
CRANIAL_MARGIN_MM = 8.0  # kept above the highest labelled point (its disc stays whole)
CAUDAL_MARGIN_MM = 20.0  # kept below the lowest: the top of the sacrum stays in view


def _canon_to_input(a: np.ndarray, points_uv: np.ndarray) -> np.ndarray:
    """``(P, 2)`` canonical ``(u, v)`` → input pixels under the input→canonical map ``a``."""
    return (invert(a) @ np.c_[points_uv, np.ones(len(points_uv))].T).T


def _keep_levels_in_view(a: np.ndarray, points_uv: np.ndarray, task: Task) -> tuple[np.ndarray, tuple[float, float]]:
    """Shift a level task's input→canonical map along the rows so the labelled points, with
    :data:`CRANIAL_MARGIN_MM` above and :data:`CAUDAL_MARGIN_MM` below, lie inside the input
    (centred when the span is taller than the input).

    Args:
        a: 2×3 input pixel → canonical pixel map.
        points_uv: ``(P, 2)`` canonical ``(u, v)`` of the labelled points (any slice).

    Returns:
        ``(a', (top, bottom))``: the shifted map and the input rows of the kept span.
    """
    v = _canon_to_input(a, points_uv)[:, 1]
    mm_per_px = float(np.hypot(*a[:, 0])) * task.canon_mm  # input pixel → canonical mm
    top = v.min() - CRANIAL_MARGIN_MM / mm_per_px
    bottom = v.max() + CAUDAL_MARGIN_MM / mm_per_px
    low, high = -top, task.input_px - 1 - bottom  # allowed downward moves of the content
    move = float(np.clip(0.0, low, high)) if low <= high else (low + high) / 2
    a = compose(a, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -move]]))
    return a, (top + move, bottom + move)


def draw(sample: SeriesSample, task: Task, rng: np.random.Generator, augment: bool = True,
         k: int | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One training pair ``(input (3, px, px), target (n_points, px/stride, px/stride))`` from a series.

    Half the draws pick a slice within one slice of a labelled point, the rest any slice.
    Geometric augmentation: scale 0.75–1.35, rotation (sd 8°), shift ±25 mm (±:data:`LEVEL_SHIFT_MM`
    along the rows on level tasks), a mirror of the columns half the time (a sagittal series
    may run anterior or posterior; on axial slices the side channels swap with it), and a
    random crop of the field of view (real series are often narrower than ours).

    Level tasks are framed by anatomy, not by the image (see :func:`_keep_levels_in_view`):
    the shift is pulled back so the span from :data:`CRANIAL_MARGIN_MM` above the highest
    labelled point to :data:`CAUDAL_MARGIN_MM` below the lowest stays in the input, and the
    crop may cut the rows anywhere outside that span. Where the field of view ends must say
    nothing about which level is which: the levels are to be counted from the sacrum, which
    the caudal margin keeps in view, never from an image edge (without this, the models
    relabelled a real exam whose field of view stops one vertebra lower).
    """
    n = len(sample.stack)
    if k is None:
        if len(sample.points) and rng.random() < 0.5:
            k = int(np.clip(np.rint(rng.choice(sample.points[:, 3]) + rng.integers(-1, 2)), 0, n - 1))
        else:
            k = int(rng.integers(0, n))
    channels = sample.points[:, 0].copy()
    by_level = task.channel == "level" and len(sample.points) > 0
    span = None  # input rows that must stay visible (level tasks)
    if augment:
        row_shift = LEVEL_SHIFT_MM if by_level else SHIFT_MM
        a = input_to_canon(task, float(np.exp(rng.uniform(np.log(0.75), np.log(1.35)))),
                           float(rng.normal(0, 8)),
                           (rng.uniform(-SHIFT_MM, SHIFT_MM), rng.uniform(-row_shift, row_shift)))  # fmt: skip
        if rng.random() < 0.5:
            a = compose(a, flip_columns(task))
            if task.channel == "side":
                channels = 1 - channels
        if by_level:
            a, span = _keep_levels_in_view(a, sample.points[:, 1:3], task)
    else:
        a = input_to_canon(task)
    x = warp(three_slices(sample.stack, k), a, task.input_px)
    if augment:
        x = augment_intensity(x, rng)
        if rng.random() < 0.5:  # narrower field of view: blank a random border
            px = task.input_px
            lo = rng.integers(0, px // 4, 2)
            hi = px - rng.integers(0, px // 4, 2)
            if span is not None:  # rows: anywhere outside the anatomical span
                lo[1] = rng.integers(0, max(int(span[0]), 0) + 1)
                hi[1] = px - rng.integers(0, max(px - int(np.ceil(span[1])), 0) + 1)
            mask = np.zeros(x.shape[1:], bool)
            mask[lo[1]:hi[1], lo[0]:hi[0]] = True
            x = x * mask[None]
    w = np.exp(-(((k - sample.points[:, 3]) * sample.spacing) ** 2) / (2 * task.slice_sigma_mm**2))
    keep = w > 0.05
    uv = _canon_to_input(a, sample.points[keep, 1:3])
    return x, heatmap_target(task, uv, w[keep], channels[keep])
