"""TotalSpineSeg label maps → :class:`~rsna_lumbar.localize.levels.LevelPoints` (LPS mm).

Input: the NIfTI files TotalSpineSeg writes (``step1_output``, ``step2_output``,
``step1_levels``; label values in ``docs/totalspineseg.md``, 'Label maps'), or any map in the same
label scheme (the synthetic set's ``truth/``). A :class:`LabelMap` keeps the array in the
file's own voxel order ``(i, j, k)`` together with the **LPS** affine of that order
(``ras_to_lps_affine(nifti.affine)``), so voxel → world never depends on how the file was
oriented.

Per level (disc label 92, 93, 94, 95, 100):

* **disc centre**: mean world position of the disc's voxels;
* **posterior disc edge**: mean of the disc voxels nearest the spinal canal (labels 1 and 2;
  Euclidean distance in mm), i.e. the disc's edge on the canal, centred left-right; without a
  canal, the disc voxels furthest posterior;
* **foramina**: the posterior edge moved along the patient's left-right axis (world +x made
  perpendicular to the disc's antero-posterior direction) by half the canal's width at that
  disc plus :attr:`SanityLimits.foramen_margin_mm` (patient left is +x), and, as the foramen
  sits above the disc and behind its edge, towards the next cranial disc by 0.3 of the disc gap
  and backwards by 0.3 of the canal depth (see :func:`_foramina`).

Sanity rules (each adds a :class:`~rsna_lumbar.localize.levels.Flag` and lowers the
confidence, see :data:`FLAG_PENALTY`): all five levels present; disc centres strictly
cranial-to-caudal (+z is cranial); neighbouring disc gaps in the plausible range; the L5/S1
disc is the most caudal disc and sits on the sacrum (off-by-one detection); no L6 / L5-L6
labels; the tool's own ``step1_levels`` points near the posterior edges.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import ndimage

from rsna_lumbar.geometry.affine import ras_to_lps_affine, voxel_spacing, voxel_to_world
from rsna_lumbar.localize.levels import POINT_KINDS, Flag, LevelPoints, PointKind
from rsna_lumbar.vocabulary import LEVELS, Level

CORD, CANAL, SACRUM = 1, 2, 50
DISC_LABELS: dict[Level, int] = {
    Level.L1_L2: 92,
    Level.L2_L3: 93,
    Level.L3_L4: 94,
    Level.L4_L5: 95,
    Level.L5_S1: 100,
}
"""TotalSpineSeg disc label of each RSNA level (same values in step1_output and step2_output)."""
LEVEL_VALUES: dict[Level, int] = {level: 21 + level.index for level in LEVELS}
"""``step1_levels`` value of each RSNA level (21 = L1-L2 … 25 = L5-S1)."""
LUMBAR_VERTEBRAE = (41, 42, 43, 44, 45)
TRANSITIONAL_LABELS = (46, 47, 96)  # L6, L7, L5-L6 disc
ALL_DISC_LABELS = (*range(63, 68), *range(71, 83), *range(91, 97), 100)

FLAG_PENALTY: dict[Flag, float] = {
    Flag.ORDER: 0.2,
    Flag.OFF_BY_ONE: 0.3,
    Flag.SPACING: 0.5,
    Flag.TRANSITIONAL: 0.6,
    Flag.NO_SACRUM: 0.8,
    Flag.LEVELS_DISAGREE: 0.8,
    Flag.FAILED: 0.0,
}
"""Confidence multiplier per flag; the study confidence starts at (levels found) / 5."""


@dataclass(frozen=True)
class SanityLimits:
    """Thresholds of the sanity rules (mm unless stated); adult lumbar discs lie ~30–45 mm apart."""

    min_gap_mm: float = 15.0
    max_gap_mm: float = 60.0
    max_gap_ratio: float = 1.8  # largest / smallest neighbouring gap (per level step)
    sacrum_max_mm: float = 20.0  # L5/S1 disc centre to the nearest sacrum voxel
    levels_max_mm: float = 6.0  # tool's level point to our posterior edge
    foramen_margin_mm: float = 6.0  # foramen lateral to the canal: half its width + this
    foramen_cranial_fraction: float = 0.3  # foramen above the disc: this × the disc gap
    foramen_posterior_fraction: float = 0.3  # and behind the disc edge: this × canal depth
    default_foramen_offset_mm: float = 15.0  # when the canal width cannot be measured
    default_gap_mm: float = 35.0  # when only one disc is found


@dataclass(frozen=True)
class LabelMap:
    """A label array in its file's voxel order with the LPS affine of that order.

    Attributes:
        labels: integer array ``(I, J, K)`` in the NIfTI file's index order.
        affine: float64 (4, 4), ``(i, j, k, 1)`` → LPS mm.
    """

    labels: np.ndarray
    affine: np.ndarray
    path: Path | None = field(default=None, compare=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelMap:
        """Read a NIfTI label map; its RAS affine is converted to LPS."""
        import nibabel as nib

        img = nib.load(str(path))
        labels = np.asanyarray(img.dataobj)
        if labels.ndim != 3:
            msg = f"{path}: expected a 3-D label map, got shape {labels.shape}"
            raise ValueError(msg)
        return cls(np.rint(labels).astype(np.int32), ras_to_lps_affine(img.affine), Path(path))

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size per index axis, float64 (3,) mm."""
        return voxel_spacing(self.affine)

    def world(self, mask: np.ndarray) -> np.ndarray:
        """World points (N, 3) LPS mm of the voxels where ``mask`` is true."""
        return voxel_to_world(self.affine, np.argwhere(mask).astype(np.float64))

    @cached_property
    def values(self) -> set[int]:
        """The label values present (computed once)."""
        return {int(v) for v in np.unique(self.labels)}


def _nearest_distance(points: np.ndarray, cloud: np.ndarray) -> np.ndarray:
    """Distance (mm) from each of ``points`` (P, 3) to the nearest of ``cloud`` (N, 3)."""
    out = np.full(len(points), np.inf)
    for start in range(0, len(cloud), 20000):
        chunk = cloud[start : start + 20000]
        d = np.linalg.norm(points[:, None, :] - chunk[None, :, :], axis=-1).min(axis=1)
        out = np.minimum(out, d)
    return out


def _voxel_extent(affine: np.ndarray, direction: np.ndarray) -> float:
    """Width (mm) of one voxel measured along a unit world direction."""
    return float(np.abs(direction @ affine[:3, :3]).sum())


def _disc_geometry(seg: LabelMap, disc: np.ndarray, canal: np.ndarray, limits: SanityLimits):
    """Centre and posterior edge ((3,) LPS mm), unit AP and left axes, lateral offset and canal
    depth (mm) of one disc mask."""
    spacing = seg.spacing
    pad = np.ceil(40.0 / spacing).astype(int)  # look for the canal within 40 mm of the disc
    idx = np.argwhere(disc)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, disc.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    disc_w = voxel_to_world(seg.affine, idx.astype(np.float64))
    centre = disc_w.mean(axis=0)
    canal_box = canal[box]
    if canal_box.any():
        dist = ndimage.distance_transform_edt(~canal_box, sampling=spacing)
        d = dist[tuple((idx - lo).T)]
        edge = disc_w[d <= d.min() + spacing.max() * 0.5]
    else:  # no canal: the most posterior disc voxels (+y is posterior)
        edge = disc_w[disc_w[:, 1] >= disc_w[:, 1].max() - spacing.max() * 0.5]
    posterior = edge.mean(axis=0)
    ap = posterior - centre
    ap = ap / np.linalg.norm(ap) if np.linalg.norm(ap) > 1e-6 else np.array([0.0, 1.0, 0.0])
    lr = np.array([1.0, 0.0, 0.0]) - ap[0] * ap  # patient left, perpendicular to AP
    lr /= np.linalg.norm(lr)
    offset, depth = limits.default_foramen_offset_mm, 0.0
    if canal_box.any():
        canal_w = voxel_to_world(seg.affine, (np.argwhere(canal_box) + lo).astype(np.float64))
        near = canal_w[np.linalg.norm(canal_w - posterior, axis=1) <= 15.0]
        if len(near):
            across = (near - posterior) @ lr
            width = np.ptp(across) + _voxel_extent(seg.affine, lr)
            offset = width / 2 + limits.foramen_margin_mm
            along = (near - posterior) @ ap
            depth = np.ptp(along) + _voxel_extent(seg.affine, ap)
    return centre, posterior, ap, lr, offset, depth


def _foramina(geo: dict, centres: dict, limits: SanityLimits) -> dict:
    """Left and right foramen points per level from the disc geometry and the neighbours.

    The foramen lies lateral to the canal (half its width + margin), a little behind the
    posterior disc edge (``foramen_posterior_fraction`` of the canal depth) and above the
    disc, towards the next cranial disc (``foramen_cranial_fraction`` of the disc gap).
    """
    out = {}
    present = [lv for lv in LEVELS if lv in centres]
    for i, level in enumerate(present):
        _, posterior, ap, lr, offset, depth = geo[level]
        if i > 0:
            up = centres[present[i - 1]] - centres[level]
            gap = np.linalg.norm(up) / (level.index - present[i - 1].index)
        elif len(present) > 1:
            up = centres[level] - centres[present[1]]
            gap = np.linalg.norm(up) / (present[1].index - level.index)
        else:
            up, gap = np.array([0.0, 0.0, 1.0]), limits.default_gap_mm
        up = up / np.linalg.norm(up)
        base = (posterior + limits.foramen_cranial_fraction * gap * up
                + limits.foramen_posterior_fraction * depth * ap)
        out[level] = (base + offset * lr, base - offset * lr)
    return out


def _sacrum_mask(seg: LabelMap, centres: dict[Level, np.ndarray]) -> np.ndarray | None:
    """Boolean mask of the sacrum, or None when it cannot be told apart.

    In step2_output and the synthetic truth 50 is the sacrum. In step1_output 50 is every
    vertebra merged (touching at the facets); there the "sacrum" is the bone within 50 mm of
    the most caudal disc's centre, on the caudal side of that disc's plane, so the check
    reduces to "the most caudal disc is labelled L5/S1 and has bone below it".
    """
    bone = seg.labels == SACRUM
    if not bone.any():
        return None
    if seg.values.intersection(LUMBAR_VERTEBRAE):
        return bone
    discs = sorted(seg.values.intersection(ALL_DISC_LABELS))
    if not discs:
        return None
    lowest = min(discs, key=lambda d: seg.world(seg.labels == d)[:, 2].mean())
    disc = seg.world(seg.labels == lowest)
    centre = disc.mean(axis=0)
    _, _, axes = np.linalg.svd(disc - centre, full_matrices=False)
    normal = axes[-1] if axes[-1][2] >= 0 else -axes[-1]  # thinnest axis, pointing cranially
    half = np.ptp((disc - centre) @ normal) / 2
    idx = np.argwhere(bone)
    world = voxel_to_world(seg.affine, idx.astype(np.float64))
    keep = (np.linalg.norm(world - centre, axis=1) <= 50.0) & (
        (world - centre) @ normal < -half)
    if keep.sum() * np.prod(seg.spacing) < 1000.0:  # less than 1 cm³ of bone below
        return None
    mask = np.zeros_like(bone)
    mask[tuple(idx[keep].T)] = True
    return mask


def points_from_labels(
    seg: LabelMap,
    *,
    levels: LabelMap | None = None,
    source: str = "totalspineseg",
    limits: SanityLimits = SanityLimits(),
) -> LevelPoints:
    """Level points from a TotalSpineSeg-format label map (step1/step2 output or truth).

    Args:
        seg: discs 92–95/100, canal 2, cord 1, sacrum or merged bone 50 (see :func:`_sacrum_mask`).
        levels: the matching ``step1_levels`` map, if any: used as a cross-check only.
        source: recorded in the result.
        limits: thresholds of the sanity rules.

    Returns:
        :class:`LevelPoints` with points in LPS mm, flags and confidence as described in the
        module docstring.
    """
    points = np.full((len(LEVELS), len(POINT_KINDS), 3), np.nan)
    level_conf = np.zeros(len(LEVELS))
    flags: list[Flag] = []
    notes: list[str] = []
    canal = np.isin(seg.labels, (CORD, CANAL))
    geo: dict[Level, tuple] = {}
    for level, label in DISC_LABELS.items():
        disc = seg.labels == label
        if disc.any():
            geo[level] = _disc_geometry(seg, disc, canal, limits)
            level_conf[level.index] = 1.0
    centres = {level: g[0] for level, g in geo.items()}
    for level, (left, right) in _foramina(geo, centres, limits).items():
        points[level.index] = np.stack([geo[level][0], geo[level][1], left, right])

    def flag(f: Flag, note: str) -> None:
        if f not in flags:
            flags.append(f)
        notes.append(note)

    missing = [lv.title for lv in LEVELS if lv not in centres]
    if missing:
        flag(Flag.MISSING_LEVEL, f"levels not found: {', '.join(missing)}")
    present = [lv for lv in LEVELS if lv in centres]
    z = [centres[lv][2] for lv in present]
    if any(a <= b for a, b in zip(z, z[1:])):
        flag(Flag.ORDER, "disc centres are not cranial-to-caudal: " + ", ".join(
            f"{lv.title} z={c:.1f}" for lv, c in zip(present, z)))
    gaps = []
    for a, b in zip(present, present[1:]):
        gap = float(np.linalg.norm(centres[a] - centres[b])) / (b.index - a.index)
        gaps.append(gap)
        if not limits.min_gap_mm <= gap <= limits.max_gap_mm:
            flag(Flag.SPACING, f"{a.title}→{b.title} gap {gap:.1f} mm per level outside "
                 f"[{limits.min_gap_mm}, {limits.max_gap_mm}]")
            level_conf[[a.index, b.index]] *= 0.5
    if len(gaps) > 1 and max(gaps) / max(min(gaps), 1e-6) > limits.max_gap_ratio:
        flag(Flag.SPACING, f"uneven disc gaps {[round(g, 1) for g in gaps]} mm")
    _check_sacrum(seg, centres, limits, flag)
    if levels is not None:
        _check_levels(levels, points, limits, flag, level_conf)
    confidence = len(centres) / len(LEVELS)
    for f in flags:
        confidence *= FLAG_PENALTY.get(f, 1.0)
    return LevelPoints(points, level_conf, confidence, source, tuple(flags), tuple(notes))


def _check_sacrum(seg: LabelMap, centres: dict, limits: SanityLimits, flag) -> None:
    """Off-by-one detection: the L5/S1 disc must be the lowest disc and sit on the sacrum."""
    transitional = sorted(seg.values.intersection(TRANSITIONAL_LABELS))
    if transitional:
        flag(Flag.TRANSITIONAL, f"transitional labels present: {transitional} (L6 / L5-L6)")
    other_discs = seg.values.intersection(ALL_DISC_LABELS) - set(DISC_LABELS.values())
    if Level.L5_S1 in centres and other_discs:
        l5s1_z = centres[Level.L5_S1][2]
        below = [d for d in sorted(other_discs) if seg.world(seg.labels == d)[:, 2].mean() < l5s1_z]
        if below:
            flag(Flag.OFF_BY_ONE, f"disc labels {below} lie caudal to the L5/S1 disc")
    sacrum = _sacrum_mask(seg, centres)
    if sacrum is None or not centres:
        flag(Flag.NO_SACRUM, "sacrum not identifiable: numbering not checked against it")
        return
    cloud = seg.world(sacrum)
    order = list(centres)
    dist = _nearest_distance(np.stack([centres[lv] for lv in order]), cloud)
    nearest = order[int(np.argmin(dist))]
    if nearest is not Level.L5_S1:
        flag(Flag.OFF_BY_ONE, f"the disc nearest the sacrum is labelled {nearest.title} "
             f"({dist.min():.1f} mm), not L5/S1: numbering is probably shifted by one level")
    elif dist.min() > limits.sacrum_max_mm:
        flag(Flag.OFF_BY_ONE, f"L5/S1 disc is {dist.min():.1f} mm from the sacrum "
             f"(> {limits.sacrum_max_mm} mm): a level may be missing or extra")
    elif cloud[:, 2].mean() > centres[Level.L5_S1][2]:
        flag(Flag.OFF_BY_ONE, "the sacrum's centre lies above the L5/S1 disc")


def _check_levels(levels: LabelMap, points, limits: SanityLimits, flag, level_conf) -> None:
    """Compare TotalSpineSeg's own ``step1_levels`` points with the posterior disc edges."""
    for level, value in LEVEL_VALUES.items():
        mask = levels.labels == value
        ours = points[level.index, PointKind.DISC_POSTERIOR.index]
        if not mask.any():
            if np.isfinite(ours).all():
                flag(Flag.LEVELS_DISAGREE, f"{level.title}: disc found but no step1_levels point")
            continue
        theirs = levels.world(mask).mean(axis=0)
        if not np.isfinite(ours).all():
            flag(Flag.LEVELS_DISAGREE, f"{level.title}: step1_levels point but no disc")
            continue
        d = float(np.linalg.norm(theirs - ours))
        if d > limits.levels_max_mm:
            flag(Flag.LEVELS_DISAGREE, f"{level.title}: step1_levels point {d:.1f} mm from the "
                 f"posterior disc edge (> {limits.levels_max_mm} mm)")
            level_conf[level.index] *= 0.8


def parse_tss_output(
    out_dir: str | os.PathLike,
    name: str,
    *,
    source: str = "totalspineseg",
    limits: SanityLimits = SanityLimits(),
) -> LevelPoints:
    """Level points from a TotalSpineSeg output folder for input file ``name`` (no extension).

    Uses ``step2_output/NAME.nii.gz`` when present (sacrum and vertebrae told apart), else
    ``step1_output/NAME.nii.gz``; ``step1_levels/NAME.nii.gz`` is the cross-check.

    Raises:
        FileNotFoundError: when neither output map exists (TotalSpineSeg deletes the file of an
            input it could not label, e.g. no landmark disc in the field of view).
    """
    out_dir = Path(out_dir)
    paths = [out_dir / f"{folder}/{name}.nii.gz" for folder in ("step2_output", "step1_output")]
    found = [p for p in paths if p.is_file()]
    if not found:
        msg = (f"TotalSpineSeg wrote no label map for {name!r} under {out_dir} (looked for "
               f"{', '.join(str(p) for p in paths)}); it drops inputs it cannot label")
        raise FileNotFoundError(msg)
    seg = LabelMap.load(found[0])
    lv_path = out_dir / f"step1_levels/{name}.nii.gz"
    levels = LabelMap.load(lv_path) if lv_path.is_file() else None
    result = points_from_labels(seg, levels=levels, source=source, limits=limits)
    result.extras["label_map"] = str(found[0])
    return result
