"""Prediction: Volumes → world points with a confidence, per (condition, level).

Rules (documented choices):

* **Sagittal T2 → Spinal Canal Stenosis**: the ``sag_t2`` model scores every slice. On each
  slice and its two neighbours (per-cell maximum) the five points are decoded *as a chain*
  (:func:`chain_decode`): candidates are the local maxima of the all-levels map, and dynamic
  programming picks five of them running cranial → caudal, consecutive ones 15–65 mm apart,
  that maximise the summed log-probability of their level's heatmap (a gentle penalty outside
  22–50 mm). So a level cannot be skipped or repeated, and the five move together when the
  evidence says the chain sits one disc higher or lower. The mid-line slice is the one whose
  chain scores best after a Gaussian prior (sd 20 mm) on its distance from the series centre
  (sagittal series are centred on the spine). Each level's point is its heatmap's refined
  peak within the cells where the chain read that level's evidence (:data:`EVIDENCE_MM`, ±8.8 mm: ±2
  cells of the 128 px grid, around the chosen candidate), on the slice (of the three) where that peak is highest; a wider
  window let a level's map that rises toward the next disc drag its point half-way there.
  Without a valid chain the mid-line slice is the one with the highest (prior-weighted) sum
  of the five levels' peaks and each level takes its own best peak within one slice of it.
* **Sagittal T1 → Neural Foraminal Narrowing**: the ``sag_t1`` model scores every slice for
  "a foramen of level L"; slices are split by side of the mid-line — the world x of the
  study's predicted canal points when the T2 series was localised, else the centre of the T1
  stack — patient left = LPS +x. With the five canal points, a level's foramen is sought only
  in the part of the sagittal plane nearest to that level's canal point
  (:func:`level_territories`), so the levels come from the canal chain. Each side takes its
  best slice.
* **Axial T2 → Subarticular Stenosis**: each predicted canal point (world) is registered to the
  axial stacks with :func:`rsna_lumbar.dicom.placement.place_in_stack`/``choose``; of that slice
  and its neighbours, the ``axial`` model picks the one its recess peaks say the points are on
  (a Gaussian prior on the distance from the canal point), and gives there the left and right
  points (channel 0 = patient left). The slices of one axial stack go through the models in
  one batch.

Confidence is the heatmap peak probability (in [0, 1]; for the axial points × 0.5 when the
chosen slice is farther than half a slice spacing from the canal point).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rsna_lumbar.devices import autocast, model_device
from rsna_lumbar.localize.keypoints.dataset import (
    TASKS, Task, canonical_stack, cell_centres, compose, input_to_canon, three_slices, warp,
)
from rsna_lumbar.localize.keypoints.model import decode_peaks
from rsna_lumbar.vocabulary import LEVELS, Condition, Side

SOURCE = "learned"
EVIDENCE_MM = 8.8  # reach of a level's evidence around a chain candidate (module docstring)
AXIAL_PRIOR_MM = 4.0  # sd of the prior on an axial slice's distance from the canal point


@dataclass(frozen=True)
class Decoding:
    """How the heatmaps become points (module docstring; each choice measured on synthetic
    studies by ``python -m bench localiser_decoding``).

    ``mirror``: every slice also goes through the models column-mirrored, the two maps averaged
    (test-time augmentation, 2× the forward passes). ``territories``: a level's foramen is
    sought only in its canal point's territory (:func:`level_territories`). ``axial_reach``:
    slices either side of the registered axial slice that may hold a level's recesses (0: the
    registered slice).
    """

    mirror: bool = True
    territories: bool = True
    axial_reach: int = 1


DECODING = Decoding()


def task_of(models: list, name: str) -> Task:
    """The task (input grid) ``models`` were trained on: their ``task`` (set by training and
    by :func:`~.model.load_models` from ``config.json``), else :data:`~.dataset.TASKS`'s."""
    return getattr(models[0], "task", None) or TASKS[name]


def _forward(model, chunk: torch.Tensor) -> torch.Tensor:
    """Heatmap probabilities of ``model`` on ``chunk`` (the sigmoid in float32 even when the
    logits come from autocast)."""
    return torch.sigmoid(model(chunk).float())


def _mirrored_forward(model, chunk: torch.Tensor, task: Task) -> torch.Tensor:
    """Probabilities of ``model`` on the column-mirrored input, mapped back (the mirror of
    input pixel ``u`` is ``px - 1 - u``, so heatmap cell ``i`` ↔ ``w - 1 - i`` exactly); on
    axial slices the side channels swap back too."""
    prob = _forward(model, chunk.flip(-1)).flip(-1)
    return prob.flip(1) if task.channel == "side" else prob


@torch.no_grad()
def slice_probabilities(models: list, volume, task: Task, slices: list[int] | None = None,
                        batch: int = 16, mirror: bool = True) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:  # fmt: skip
    """Heatmap probabilities of a task's fold models (their mean) on slices of a volume;
    ``mirror``: averaged with the column-mirrored input's (test-time augmentation, 2× the
    forward passes; :class:`Decoding`).

    The models run where their weights are (all on one device): on CUDA the batches go there
    and through autocast, the probabilities come back to the CPU; on the CPU it is plain
    float32.

    Returns ``(prob (K, P, h, w), to_vox (2×3 input pixel → voxel (col, row)), slices (K,))``.
    """
    stack, canon_to_vox = canonical_stack(volume, task)
    a = input_to_canon(task)
    slices = list(range(len(stack))) if slices is None else list(slices)
    x = np.stack([warp(three_slices(stack, k), a, task.input_px) for k in slices])
    device = model_device(models[0])
    probs = []
    for start in range(0, len(x), batch):
        chunk = torch.from_numpy(x[start:start + batch]).to(device, non_blocking=True)
        chunk = chunk.to(memory_format=torch.channels_last)
        with autocast(device):
            outputs = [_forward(m, chunk) for m in models]
            if mirror:
                outputs += [_mirrored_forward(m, chunk, task) for m in models]
        probs.append(torch.stack(outputs).mean(0).cpu())
    return torch.cat(probs), compose(canon_to_vox, a), np.asarray(slices)


def _to_voxel(to_vox: np.ndarray, uv: np.ndarray) -> np.ndarray:
    flat = uv.reshape(-1, 2)
    return (to_vox @ np.c_[flat, np.ones(len(flat))].T).T.reshape(uv.shape)


def _decode(prob: torch.Tensor, to_vox: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of ``prob (K, P, h, w)``: ``(voxel (col, row) (K, P, 2), score (K, P))``."""
    uv, score = decode_peaks(prob, stride)
    return _to_voxel(to_vox, uv.numpy()), score.numpy()


def slice_heatmaps(models: list, volume, task: Task, slices: list[int] | None = None,
                   batch: int = 16, mirror: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Run a task's fold models on slices of a volume (mean of their probabilities).

    Returns ``(uv_voxel (K, P, 2), score (K, P), slices (K,))``: for each scored slice and
    point channel, the peak as voxel ``(col, row)`` of that slice and its probability.
    """
    prob, to_vox, slices = slice_probabilities(models, volume, task, slices, batch, mirror)
    return (*_decode(prob, to_vox, models[0].stride), slices)


def _local_maxima(m: np.ndarray, floor: float, top: int, window: int = 3) -> np.ndarray:
    """``(n, 2)`` (row, col) cells of ``m`` (h, w) that are ``window``² maxima above ``floor``,
    best first."""
    t = torch.from_numpy(m)[None, None]
    peak = (t == torch.nn.functional.max_pool2d(t, window, 1, window // 2))[0, 0].numpy() & (m > floor)
    cells = np.argwhere(peak)
    order = np.argsort(-m[peak])[:top]
    return cells[order]


def chain_decode(prob: np.ndarray, cell_to_mm, gaps=(15.0, 65.0), soft=(22.0, 50.0),
                 top: int = 12, window: int = 3) -> tuple[np.ndarray, float] | None:  # fmt: skip
    """Choose one candidate cell per level so the five run cranial → caudal with plausible gaps.

    Args:
        prob: ``(5, h, w)`` level heatmaps (probabilities), level 0 = L1/L2.
        cell_to_mm: maps ``(n, 2)`` (row, col) cells to ``(n, 3)`` world points (LPS mm).
        gaps: hard bounds (mm) on the distance between consecutive levels.
        soft: no penalty inside these bounds; outside, −((excess mm) / 5)².
        top: candidates kept (local maxima of the all-levels map).
        window: cells (odd) of the local-maximum test and of a level's evidence pooling
            (3 on a stride-4 grid, 5 on a stride-2 one: about 26 mm either way).

    Returns:
        ``(cells, score)``: ``(5, 2)`` (row, col) cells and the chain's summed log-probability
        (with the gap penalties), or ``None`` when no chain satisfies the bounds.
    """
    n_levels = prob.shape[0]
    cells = _local_maxima(prob.max(axis=0), 1e-3, top, window)
    if len(cells) < n_levels:
        return None
    world = cell_to_mm(cells)
    order = np.argsort(-world[:, 2])  # superior (LPS +z) first
    cells, world = cells[order], world[order]
    # a level's evidence at a candidate: its heatmap's best cell within the window around it
    pooled = torch.nn.functional.max_pool2d(torch.from_numpy(prob)[None], window, 1, window // 2)[0].numpy()
    score = np.log(pooled[:, cells[:, 0], cells[:, 1]] + 1e-4)  # (levels, candidates)
    gap = np.linalg.norm(world[:, None] - world[None], axis=2)
    ok = (gap >= gaps[0]) & (gap <= gaps[1]) & (world[:, None, 2] > world[None, :, 2])
    penalty = -((np.maximum(soft[0] - gap, 0) + np.maximum(gap - soft[1], 0)) / 5.0) ** 2
    link = np.where(ok, penalty, -np.inf)  # link[i, j]: candidate i (above) → j (below)
    best = score[0].copy()
    back = np.zeros((n_levels, len(cells)), int)
    for level in range(1, n_levels):
        total = best[:, None] + link
        back[level] = np.argmax(total, axis=0)
        best = total[back[level], np.arange(len(cells))] + score[level]
    if not np.isfinite(best.max()):
        return None
    chosen = [int(np.argmax(best))]
    for level in range(n_levels - 1, 0, -1):
        chosen.append(int(back[level, chosen[-1]]))
    return cells[chosen[::-1]], float(best.max())


def _row(volume, condition: Condition, level, k: int, col: float, row: float, conf: float) -> dict:
    world = volume.voxel_to_world(np.array([col, row, float(k)]))
    return {"study_id": int(volume.study_id), "series_id": int(volume.series_id),
            "instance_number": int(volume.instance_of(k)), "condition": condition.title,
            "level": level.title, "x": round(float(col), 3), "y": round(float(row), 3),
            "world_x": float(world[0]), "world_y": float(world[1]), "world_z": float(world[2]),
            "source": SOURCE, "confidence": round(float(conf), 4)}  # fmt: skip


def canal_points(models: list, volume, chain: bool = True, centre_sd_mm: float = 20.0,
                 decoding: Decoding = DECODING) -> list[dict]:  # fmt: skip
    """Spinal Canal Stenosis rows (one per level) of a sagittal T2 Volume (``chain``: decode
    the five levels jointly, see the module docstring; else each level on its own)."""
    prob, to_vox, slices = slice_probabilities(models, volume, task_of(models, "sag_t2"),
                                               mirror=decoding.mirror)  # fmt: skip
    return decode_canal(prob, to_vox, slices, volume, models[0].stride, chain, centre_sd_mm)


def decode_canal(prob: torch.Tensor, to_vox: np.ndarray, slices: np.ndarray, volume, stride: int,
                 chain: bool = True, centre_sd_mm: float = 20.0) -> list[dict]:  # fmt: skip
    """:func:`canal_points` from the ``sag_t2`` probabilities of :func:`slice_probabilities`
    (``prob (K, 5, h, w)``, ``to_vox``, ``slices``) of ``volume`` on a ``stride`` grid."""
    # cells (odd) of a level's evidence at a candidate: ±EVIDENCE_MM, whatever the grid's detail
    cell_mm = stride * float(np.hypot(to_vox[0, 0] * volume.spacing[0], to_vox[1, 0] * volume.spacing[1]))
    half = max(1, int(round(EVIDENCE_MM / cell_mm)))
    pool = 2 * half + 1
    vox, score = _decode(prob, to_vox, stride)
    # sagittal series are centred on the spine: a Gaussian prior on the mid-line slice
    offset_mm = (np.arange(len(slices)) - (len(slices) - 1) / 2) * float(volume.spacing[2])
    log_prior = -0.5 * (offset_mm / centre_sd_mm) ** 2
    mid = int(np.argmax(np.log(score.sum(axis=1) + 1e-6) + log_prior))
    cells = None
    if chain:
        best_objective = -np.inf
        for k in range(len(slices)):
            stacked = prob[max(k - 1, 0):k + 2].numpy().max(axis=0)

            def cell_to_mm(rc: np.ndarray, k=k) -> np.ndarray:
                centre = cell_centres(rc[:, ::-1], stride).astype(float)
                v = _to_voxel(to_vox, centre)
                return volume.voxel_to_world(np.c_[v, np.full(len(v), float(slices[k]))])

            found = chain_decode(stacked, cell_to_mm, window=pool)
            if found is not None and found[1] + log_prior[k] > best_objective:
                best_objective, cells, mid = found[1] + log_prior[k], found[0], k
    near = np.flatnonzero(np.abs(np.arange(len(slices)) - mid) <= 1)
    rows = []
    for level in LEVELS:
        i = level.index
        if cells is None:
            best = int(near[np.argmax(score[near, i])])
            col, row = vox[best, i]
            conf = score[best, i]
        else:  # the level's refined peak where the chain measured its evidence (± pool // 2 cells)
            r, c = cells[i]
            window = torch.zeros_like(prob[0, i])
            window[max(r - half, 0):r + half + 1, max(c - half, 0):c + half + 1] = 1
            local = prob[near, i] * window
            best = int(near[int(torch.argmax(local.flatten(1).max(dim=1).values))])
            peak, peak_score = decode_peaks(prob[best, i] * window, stride)
            col, row = _to_voxel(to_vox, peak.numpy()[None])[0]
            conf = float(peak_score)
        rows.append(_row(volume, Condition.SPINAL_CANAL_STENOSIS, level, int(slices[best]), col, row,
                         conf))  # fmt: skip
    return rows


def level_territories(cell_world: np.ndarray, canal_world: np.ndarray, reach: float = 0.75) -> np.ndarray:
    """Which cells may hold each level's foramen: those nearer to that level's canal point than
    to any other level's, in the sagittal plane (world y and z, LPS mm; the left-right x is
    ignored), and no farther from it than ``reach`` × the largest gap between consecutive canal
    points (so the end levels do not claim the sacrum or the thoracic spine).

    Args:
        cell_world: ``(..., 3)`` world points of heatmap cells.
        canal_world: ``(5, 3)`` the study's canal points, level 0 = L1/L2.

    Returns:
        ``(5, ...)`` boolean masks.
    """
    d = np.linalg.norm(cell_world[None, ..., 1:] - canal_world.reshape(5, *([1] * (cell_world.ndim - 1)), 3)[..., 1:],
                       axis=-1)  # fmt: skip
    limit = reach * float(np.max(np.linalg.norm(np.diff(canal_world[:, 1:], axis=0), axis=1)))
    return (d == d.min(axis=0, keepdims=True)) & (d <= limit)


def foramen_points(models: list, volume, canal: list[dict] | None = None,
                   decoding: Decoding = DECODING) -> list[dict]:  # fmt: skip
    """Left and right Neural Foraminal Narrowing rows (up to 10) of a sagittal T1 Volume.

    ``canal``: the study's Spinal Canal Stenosis rows (world points, one per level) when its
    sagittal T2 was localised. They set the mid-line that splits the slices by side (patient
    left = LPS +x; without them the centre of the T1 stack) and, when all five are there, each
    level's territory (:func:`level_territories`): a level's foramen is its heatmap's peak within
    the part of the sagittal plane nearest to its own canal point, so the chain found on
    sagittal T2 (levels right far more often than the foramina on their own) fixes the levels
    of the foramina too. Each side takes its best slice per level.
    """
    task = task_of(models, "sag_t1")
    prob, to_vox, slices = slice_probabilities(models, volume, task, mirror=decoding.mirror)
    n_cols, n_rows = volume.shape[2], volume.shape[1]
    centres = volume.voxel_to_world(np.c_[np.full(len(slices), (n_cols - 1) / 2),
                                          np.full(len(slices), (n_rows - 1) / 2), slices])  # fmt: skip
    canal = canal or []
    midline_x = float(np.median([r["world_x"] for r in canal])) if canal else float(np.median(centres[:, 0]))
    decoded = [_decode(prob, to_vox, models[0].stride)]  # unconstrained, then (first) constrained
    if decoding.territories and len(canal) == len(LEVELS):
        h, w = prob.shape[-2:]
        rc = np.argwhere(np.ones((h, w), bool))  # (h*w, 2) cells, row-major
        vox = _to_voxel(to_vox, cell_centres(rc[:, ::-1], models[0].stride).astype(float))
        cell_world = np.stack([volume.voxel_to_world(np.c_[vox, np.full(len(vox), float(k))])
                               for k in slices]).reshape(len(slices), h, w, 3)  # fmt: skip
        by_level = {r["level"]: (r["world_x"], r["world_y"], r["world_z"]) for r in canal}
        canal_world = np.array([by_level[level.title] for level in LEVELS], float)
        territory = torch.from_numpy(level_territories(cell_world, canal_world))  # (5, K, h, w)
        masked = prob * territory.permute(1, 0, 2, 3).to(prob.dtype)
        decoded.insert(0, _decode(masked, to_vox, models[0].stride))
    rows = []
    for side in Side:
        on_side = centres[:, 0] > midline_x if side is Side.LEFT else centres[:, 0] < midline_x
        if not on_side.any():
            continue
        condition = Condition(f"{side.value}_neural_foraminal_narrowing")
        for level in LEVELS:
            # the level's territory on this side's slices, else (no cell of it there) anywhere
            for vox, score in decoded:
                s = np.where(on_side, score[:, level.index], -1.0)
                best = int(np.argmax(s))
                if s[best] > 0:
                    break
            col, row = vox[best, level.index]
            rows.append(_row(volume, condition, level, int(slices[best]), col, row, max(s[best], 0.0)))
    return rows


def subarticular_points(models: list, canal: list[dict], axial_stacks: list, read,
                        decoding: Decoding = DECODING) -> list[dict]:  # fmt: skip
    """Subarticular rows from predicted canal rows (world points) and the study's axial stacks.

    Each canal point is registered to the axial stack that shows it; the slice is then chosen
    by the ``axial`` model among the registered slice and its ``decoding.axial_reach`` neighbours: the
    one whose two recess peaks (whose height says "the point is on this slice") are highest,
    after a Gaussian prior (sd :data:`AXIAL_PRIOR_MM`) on its distance from the canal point.
    ``read(stack) -> Volume`` decodes a stack (cached by the caller).
    """
    from rsna_lumbar.dicom.placement import stack_showing

    task = task_of(models, "axial")
    placed = []  # (canal row, axial volume, {slice: log prior}, fractional slice of the point)
    for point in canal:
        world = np.array([point["world_x"], point["world_y"], point["world_z"]])
        found = stack_showing(world, axial_stacks)
        if found is None:
            continue
        stack, best = found
        volume = read(stack)
        if volume is None:
            continue
        k0 = int(volume.slice_of(best.instance_number))
        at = float(volume.world_to_voxel(world[None])[0, 2])  # fractional slice of the point
        reach = decoding.axial_reach
        near = range(max(k0 - reach, 0), min(k0 + reach, volume.shape[0] - 1) + 1)
        prior = {k: -0.5 * ((k - at) * float(volume.spacing[2]) / AXIAL_PRIOR_MM) ** 2 for k in near}
        placed.append((point, volume, prior, at))
    # one batched pass per axial volume over the slices its levels may lie on
    heatmaps = {}
    for volume in {id(v): v for _, v, _, _ in placed}.values():
        wanted = sorted({k for _, v, prior, _ in placed if v is volume for k in prior})
        vox, score, _ = slice_heatmaps(models, volume, task, wanted, mirror=decoding.mirror)
        heatmaps[id(volume)] = {k: (vox[i], score[i]) for i, k in enumerate(wanted)}
    rows = []
    for point, volume, prior, at in placed:
        seen = heatmaps[id(volume)]
        k = max(prior, key=lambda j: np.log(seen[j][1].sum() + 1e-6) + prior[j])
        factor = 1.0 if abs(k - at) <= 0.5 else 0.5  # the chosen slice's own distance
        vox, score = seen[k]
        level = next(lv for lv in LEVELS if lv.title == point["level"])
        for side in Side:
            ch = 0 if side is Side.LEFT else 1
            col, row = vox[ch]
            rows.append(_row(volume, Condition(f"{side.value}_subarticular_stenosis"), level, k,
                             col, row, factor * score[ch]))  # fmt: skip
    return rows
