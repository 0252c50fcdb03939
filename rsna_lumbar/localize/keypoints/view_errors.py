"""The localiser's error as each crop view sees it: in-plane millimetres and slices.

A severity crop is cut around a point in one series' frame (:mod:`rsna_lumbar.crops.recipes`):
the spinal family on the sagittal T2 and on the axial stack, the foramina on the sagittal T1,
the lateral recesses on the axial stack. A localiser error ``d = predicted − true`` (LPS mm)
splits, in the frame of the stack that view is cut from (unit normal ``n``, slice spacing
``s``), into a through-plane part ``|d · n| / s`` slices and an in-plane part
``|d − (d · n) n|`` mm. The frame is the labelled point's own stack, except for the spinal
axial view, whose frame is the axial stack registered from the true canal point (the one the
crop is cut from).

:func:`view_errors` reports, per family and view, the 50th and 75th percentiles of both parts;
training sizes its jitter from them (``rsna-lumbar train --jitter-from``,
:mod:`rsna_lumbar.training.jitter`), so the severity models see during training the
off-centre crops the localiser gives them at inference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rsna_lumbar.dicom.placement import axial_stacks_by_study, is_axial_stack, stack_showing
from rsna_lumbar.vocabulary import VIEWS

QUANTILES = (50, 75)


def split_error(d: np.ndarray, normal: np.ndarray, spacing: float) -> tuple[float, float]:
    """``(in-plane mm, through-plane slices)`` of an error vector ``d`` (3,) LPS mm in the frame
    of a stack with unit ``normal`` (3,) and slice ``spacing`` mm."""
    through = float(d @ normal)
    return float(np.linalg.norm(d - through * normal)), abs(through) / spacing


def _own_stack(stacks: dict, study_id: int, series_id: int, instance_number: int):
    return next((s for s in stacks.get((study_id, series_id), []) if instance_number in s), None)


def view_errors(merged: pd.DataFrame, stacks: dict) -> dict:
    """Per family and view: percentiles of the in-plane (mm) and through-plane (slices) error.

    Args:
        merged: truth rows joined with predictions (``stage.evaluate``'s frame): ``family``,
            ``study_id``, ``series_id_t`` and ``instance_number_t`` (the labelled point's
            series and slice), true ``tx, ty, tz`` and predicted ``world_x, world_y,
            world_z`` (LPS mm); rows without a prediction are ignored.
        stacks: ``{(study_id, series_id): [Stack, ...]}``.

    Returns:
        ``{family: {view: {"n", "in_plane_p50_mm", "in_plane_p75_mm", "slices_p50",
        "slices_p75"}}}`` for the views with at least one measured point.
    """
    axial = axial_stacks_by_study(stacks)
    parts: dict[tuple[str, str], list[tuple[float, float]]] = {}
    rows = merged.dropna(subset=["world_x", "tx"])
    for row in rows.itertuples():
        true = np.array([row.tx, row.ty, row.tz])
        d = np.array([row.world_x, row.world_y, row.world_z]) - true
        own = _own_stack(stacks, int(row.study_id), int(row.series_id_t), int(row.instance_number_t))
        for view in VIEWS[row.family]:
            if view == "axial" and (own is None or not is_axial_stack(own)):
                found = stack_showing(true, axial.get(int(row.study_id), []))
                frame = None if found is None else found[0]
            else:
                frame = own
            if frame is None or not np.isfinite(frame.slice_spacing):
                continue
            parts.setdefault((row.family, view), []).append(split_error(d, frame.normal, frame.slice_spacing))
    out: dict = {}
    for (family, view), values in sorted(parts.items()):
        in_plane, slices = np.array(values).T
        entry: dict = {"n": len(values)}
        for q in QUANTILES:
            entry[f"in_plane_p{q}_mm"] = round(float(np.percentile(in_plane, q)), 2)
            entry[f"slices_p{q}"] = round(float(np.percentile(slices, q)), 2)
        out.setdefault(family, {})[view] = entry
    return out
