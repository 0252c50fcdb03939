"""The learned localiser's metrics: predicted rows against the label coordinates.

:func:`evaluate` turns the label coordinates into world points through the labelled series'
geometry and reports per family (spinal, foraminal, subarticular) the median and 95th
percentile of the 3-D error in mm, coverage, and level accuracy (the predicted point's nearest
true point of the same study and condition carries the same level); the axial-slice
disagreement rate (:func:`axial_disagreement`: how often the axial slice registered from the
predicted canal point differs from the one registered from the true canal point); and
``view_errors``, the error as each crop view sees it (below).

The error per crop view (:func:`view_errors`): a severity crop is cut around a point in one
series' frame (:mod:`rsna_lumbar.crops.recipes`): the spinal family on the sagittal T2 and on
the axial stack, the foramina on the sagittal T1, the lateral recesses on the axial stack. A
localiser error ``d = predicted − true`` (LPS mm) splits, in the frame of the stack that view
is cut from (unit normal ``n``, slice spacing ``s``), into a through-plane part
``|d · n| / s`` slices and an in-plane part ``|d − (d · n) n|`` mm. The frame is the labelled
point's own stack, except for the spinal axial view, whose frame is the axial stack registered
from the true canal point (the one the crop is cut from). :func:`view_errors` reports, per
family and view, the 50th and 75th percentiles of both parts; training sizes its jitter from
them (``rsna-lumbar train --jitter-from``, :mod:`rsna_lumbar.training.jitter`), so the severity
models see during training the off-centre crops the localiser gives them at inference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rsna_lumbar.dicom.placement import (
    axial_stacks_by_study, competition_to_world, is_axial_stack, stack_showing,
)
from rsna_lumbar.vocabulary import VIEWS, Condition

QUANTILES = (50, 75)


def _world_truth(coords: pd.DataFrame, stacks: dict) -> pd.DataFrame:
    worlds = []
    for row in coords.itertuples():
        try:
            worlds.append(competition_to_world(stacks.get((row.study_id, row.series_id), []),
                                               int(row.instance_number), row.x, row.y))  # fmt: skip
        except ValueError:
            worlds.append(np.full(3, np.nan))
    return coords.assign(**dict(zip(("tx", "ty", "tz"), np.array(worlds).reshape(-1, 3).T)))


def evaluate(pred: pd.DataFrame, coords: pd.DataFrame, stacks: dict) -> dict:
    """Metrics of predicted rows (:data:`~rsna_lumbar.points.LOCALISED_COLUMNS`) against label
    coordinates; ``stacks``: ``{(study_id, series_id): [Stack, ...]}`` (module docstring)."""
    truth = _world_truth(coords[coords.study_id.isin(pred.study_id.unique())], stacks)
    truth["family"] = truth.condition.map(lambda c: Condition.from_title(c).family.value)
    merged = truth.merge(pred, on=["study_id", "condition", "level"], how="left", suffixes=("_t", ""))
    merged["error_mm"] = np.linalg.norm(merged[["world_x", "world_y", "world_z"]].to_numpy(float)
                                        - merged[["tx", "ty", "tz"]].to_numpy(float), axis=1)  # fmt: skip
    out: dict = {"studies": int(pred.study_id.nunique())}
    for family, group in merged.groupby("family"):
        err = group.error_mm.dropna()
        level_ok = []
        for row in group.dropna(subset=["world_x"]).itertuples():
            same = truth[(truth.study_id == row.study_id) & (truth.condition == row.condition)]
            d = np.linalg.norm(same[["tx", "ty", "tz"]].to_numpy(float)
                               - [row.world_x, row.world_y, row.world_z], axis=1)  # fmt: skip
            level_ok.append(same.level.iloc[int(np.nanargmin(d))] == row.level)
        out[family] = {"n_true": len(group), "coverage": round(len(err) / max(len(group), 1), 4),
                       "median_mm": round(float(err.median()), 2) if len(err) else None,
                       "p95_mm": round(float(err.quantile(0.95)), 2) if len(err) else None,
                       "level_accuracy": round(float(np.mean(level_ok)), 4) if level_ok else None}  # fmt: skip
    out["axial_slice_disagreement"] = axial_disagreement(merged, stacks)
    out["view_errors"] = view_errors(merged, stacks)
    return out


def axial_disagreement(merged: pd.DataFrame, stacks: dict) -> dict:
    """How often the axial slice registered from the predicted canal point differs from the one
    registered from the true canal point (over (study, level) with both points)."""
    axial = axial_stacks_by_study(stacks)
    scs = merged[merged.condition == Condition.SPINAL_CANAL_STENOSIS.title].dropna(subset=["world_x", "tx"])
    differ = total = 0
    for row in scs.itertuples():
        picks = []
        for point in ([row.tx, row.ty, row.tz], [row.world_x, row.world_y, row.world_z]):
            found = stack_showing(np.array(point), axial.get(row.study_id, []))
            picks.append(None if found is None else (found[1].series_id, found[1].instance_number))
        if picks[0] is None:
            continue
        total += 1
        differ += picks[0] != picks[1]
    return {"n": total, "rate": round(differ / total, 4) if total else None}


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
        merged: truth rows joined with predictions (:func:`evaluate`'s frame): ``family``,
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
