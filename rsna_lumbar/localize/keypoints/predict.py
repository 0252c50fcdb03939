"""Prediction: Volumes → world points with a confidence, per (condition, level).

Rules (documented choices):

* **Sagittal T2 → Spinal Canal Stenosis**: the ``sag_t2`` model scores every slice; the
  mid-line slice is the one with the highest sum of the five levels' heatmap peaks, and each
  level takes its best slice within one slice of it; the peak (refined) is the point.
* **Sagittal T1 → Neural Foraminal Narrowing**: the ``sag_t1`` model scores every slice for
  "a foramen of level L"; slices are split by side of the mid-line — the world x of the
  study's predicted canal points when the T2 series was localised, else the centre of the T1
  stack — patient left = LPS +x. Each side takes its best slice.
* **Axial T2 → Subarticular Stenosis**: each predicted canal point (world) is registered to the
  axial stacks with :func:`rsna_lumbar.registration.place_in_stack`/``choose``; the ``axial``
  model on that slice gives the left and right points (channel 0 = patient left).

Confidence is the heatmap peak probability (in [0, 1]; for the axial points × 0.5 when the
registered slice is farther than half a slice spacing from the canal point).
"""

from __future__ import annotations

import numpy as np
import torch

from rsna_lumbar.localize.keypoints.dataset import TASKS, Task, canonical_stack, compose, input_to_canon, three_slices, warp
from rsna_lumbar.localize.keypoints.model import decode_peaks
from rsna_lumbar.vocabulary import LEVELS, Condition, Side

SOURCE = "learned"


@torch.no_grad()
def slice_heatmaps(models: list, volume, task: Task, slices: list[int] | None = None,
                   batch: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Run a task's fold models on slices of a volume (mean of their probabilities).

    Returns ``(uv_voxel (K, P, 2), score (K, P), slices (K,))``: for each scored slice and
    point channel, the peak as voxel ``(col, row)`` of that slice and its probability.
    """
    stack, canon_to_vox = canonical_stack(volume, task)
    a = input_to_canon(task)
    to_vox = compose(canon_to_vox, a)
    slices = list(range(len(stack))) if slices is None else list(slices)
    x = np.stack([warp(three_slices(stack, k), a, task.input_px) for k in slices])
    probs = []
    for start in range(0, len(x), batch):
        chunk = torch.from_numpy(x[start:start + batch]).to(memory_format=torch.channels_last)
        probs.append(torch.stack([torch.sigmoid(m(chunk)) for m in models]).mean(0))
    prob = torch.cat(probs)
    uv, score = decode_peaks(prob)
    uv = uv.numpy().reshape(-1, 2)
    vox = (to_vox @ np.c_[uv, np.ones(len(uv))].T).T.reshape(len(slices), -1, 2)
    return vox, score.numpy(), np.asarray(slices)


def _row(volume, condition: Condition, level, k: int, col: float, row: float, conf: float) -> dict:
    world = volume.voxel_to_world(np.array([col, row, float(k)]))
    return {"study_id": int(volume.study_id), "series_id": int(volume.series_id),
            "instance_number": int(volume.instance_of(k)), "condition": condition.title,
            "level": level.title, "x": round(float(col), 3), "y": round(float(row), 3),
            "world_x": float(world[0]), "world_y": float(world[1]), "world_z": float(world[2]),
            "source": SOURCE, "confidence": round(float(conf), 4)}  # fmt: skip


def canal_points(models: list, volume) -> list[dict]:
    """Spinal Canal Stenosis rows (one per level) of a sagittal T2 Volume."""
    vox, score, slices = slice_heatmaps(models, volume, TASKS["sag_t2"])
    mid = int(np.argmax(score.sum(axis=1)))  # the canal's mid-line slice: best for all levels
    near = np.abs(np.arange(len(slices)) - mid) <= 1
    rows = []
    for level in LEVELS:
        best = int(np.argmax(np.where(near, score[:, level.index], -1.0)))
        col, row = vox[best, level.index]
        rows.append(_row(volume, Condition.SPINAL_CANAL_STENOSIS, level, int(slices[best]), col, row,
                         score[best, level.index]))  # fmt: skip
    return rows


def foramen_points(models: list, volume, midline_x: float | None = None) -> list[dict]:
    """Left and right Neural Foraminal Narrowing rows (up to 10) of a sagittal T1 Volume."""
    vox, score, slices = slice_heatmaps(models, volume, TASKS["sag_t1"])
    n_cols, n_rows = volume.shape[2], volume.shape[1]
    centres = volume.voxel_to_world(np.c_[np.full(len(slices), (n_cols - 1) / 2),
                                          np.full(len(slices), (n_rows - 1) / 2), slices])  # fmt: skip
    if midline_x is None or not np.isfinite(midline_x):
        midline_x = float(np.median(centres[:, 0]))
    rows = []
    for side in Side:
        on_side = centres[:, 0] > midline_x if side is Side.LEFT else centres[:, 0] < midline_x
        if not on_side.any():
            continue
        condition = Condition(f"{side.value}_neural_foraminal_narrowing")
        for level in LEVELS:
            s = np.where(on_side, score[:, level.index], -1.0)
            best = int(np.argmax(s))
            col, row = vox[best, level.index]
            rows.append(_row(volume, condition, level, int(slices[best]), col, row, s[best]))
    return rows


def subarticular_points(models: list, canal: list[dict], axial_stacks: list, read) -> list[dict]:
    """Subarticular rows from predicted canal rows (world points) and the study's axial stacks.

    ``read(stack) -> Volume`` decodes a stack (cached by the caller).
    """
    from rsna_lumbar.registration import choose, place_in_stack

    rows = []
    task = TASKS["axial"]
    for point in canal:
        world = np.array([[point["world_x"], point["world_y"], point["world_z"]]])
        placements = [(stack, place_in_stack(world, stack)[0]) for stack in axial_stacks]
        best = choose([p for _, p in placements])
        if best is None:
            continue
        stack = next(s for s, p in placements if p is best)
        volume = read(stack)
        if volume is None:
            continue
        k = volume.slice_of(best.instance_number)
        vox, score, _ = slice_heatmaps(models, volume, task, [k])
        factor = 1.0 if best.covered else 0.5
        level = next(lv for lv in LEVELS if lv.title == point["level"])
        for side in Side:
            ch = 0 if side is Side.LEFT else 1
            col, row = vox[0, ch]
            rows.append(_row(volume, Condition(f"{side.value}_subarticular_stenosis"), level, k,
                             col, row, factor * score[0, ch]))  # fmt: skip
    return rows
