"""Find the five lumbar disc levels of a sagittal series, in world coordinates (LPS mm).

Every localiser returns a :class:`LevelPoints`. :func:`localize_series` runs TotalSpineSeg
(when it and its weights are installed, see :mod:`rsna_lumbar.localize.totalspineseg`) and
falls back to another localiser (the learned one) when TotalSpineSeg is unavailable, fails on
the series, or returns a result whose numbering is doubtful. Nothing here raises for a bad
series: the caller gets a flagged result (confidence 0 when nothing could be placed) and the
log says why.

The points stage (:mod:`rsna_lumbar.localize.keypoints.stage`) chains the two per study:
:func:`tss_runner` turns a ``--tss auto|on|off`` choice into a runner, and
:func:`tss_level_finder` into the stage's level finder.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rsna_lumbar.localize.levels import POINT_KINDS, Flag, LevelPoints, PointKind
from rsna_lumbar.localize.totalspineseg import (
    TotalSpineSeg,
    TotalSpineSegError,
    TotalSpineSegFailed,
    TotalSpineSegUnavailable,
    output_name,
    run_cached,
)
from rsna_lumbar.localize.tss_labels import LabelMap, SanityLimits, parse_tss_output, points_from_labels

log = logging.getLogger(__name__)

Localizer = Callable[..., LevelPoints]
"""``fn(series, study_id=..., series_id=...) -> LevelPoints``; ``series`` is a Volume or a
NIfTI path (whatever the caller passed to :func:`localize_series`)."""

__all__ = [
    "POINT_KINDS", "Flag", "LabelMap", "LevelPoints", "Localizer", "PointKind", "SanityLimits",
    "TotalSpineSeg", "TotalSpineSegError", "TotalSpineSegFailed", "TotalSpineSegUnavailable",
    "TSS_MODES", "export_volume", "localize_series", "parse_tss_output", "points_from_labels",
    "run_totalspineseg", "tss_level_finder", "tss_runner",
]
TSS_MODES = ("auto", "on", "off")
_warned_unavailable = False
_warned_failed = False


def export_volume(volume: Any, path: str | os.PathLike) -> Path:
    """Write a sagittal ``Volume`` as NIfTI (RAS affine) with the kit's exporter."""
    from rsna_lumbar.dicom.nifti import write_nifti  # owned by the dicom package

    return Path(write_nifti(volume, path) or path)


def run_totalspineseg(
    series: Any,
    *,
    cache_dir: str | os.PathLike,
    tss: TotalSpineSeg | None = None,
    study_id: int | None = None,
    series_id: int | None = None,
    force: bool = False,
) -> LevelPoints:
    """TotalSpineSeg on one series (a ``Volume`` or a NIfTI path) → :class:`LevelPoints`.

    Study and series ids default to the Volume's provenance. Raises
    :class:`TotalSpineSegUnavailable` (not installed), :class:`TotalSpineSegFailed` (the run
    failed, or wrote no label map for this series).
    """
    tss = tss or TotalSpineSeg.from_env()
    study_id = study_id if study_id is not None else getattr(series, "study_id", None)
    series_id = series_id if series_id is not None else getattr(series, "series_id", None)
    cache_dir = Path(cache_dir)
    if isinstance(series, (str, os.PathLike)):
        nifti = Path(series)
    else:
        nifti = export_volume(series, cache_dir / str(study_id) / f"{series_id}.nii.gz")
    out = run_cached(tss, nifti, cache_dir, study_id=study_id, series_id=series_id, force=force)
    try:
        points = parse_tss_output(out, output_name(study_id, series_id))
    except FileNotFoundError as err:
        raise TotalSpineSegFailed(str(err), study_id=study_id, series_id=series_id) from err
    return points.with_provenance(study_id, series_id)


def localize_series(
    series: Any,
    *,
    cache_dir: str | os.PathLike,
    tss: TotalSpineSeg | None = None,
    use_tss: bool = True,
    fallback: Localizer | None = None,
    study_id: int | None = None,
    series_id: int | None = None,
) -> LevelPoints:
    """Best available level points for one sagittal series; never raises for a bad series.

    Order: TotalSpineSeg (if ``use_tss`` and installed), then ``fallback`` (the learned
    localiser) when TotalSpineSeg is unavailable, fails, or its result is not
    :attr:`LevelPoints.ok` (the more confident of the two is kept). Without a usable result
    the answer is :meth:`LevelPoints.empty` (confidence 0), and the caller falls back to
    priors. Each fallback is logged with the study, the series and the reason, and the reason
    is kept in the result's ``notes``; the first TotalSpineSeg failure of the process is logged
    as a warning with the program's last lines, later ones in one info line each.
    """
    global _warned_unavailable, _warned_failed
    study_id = study_id if study_id is not None else getattr(series, "study_id", None)
    series_id = series_id if series_id is not None else getattr(series, "series_id", None)
    primary: LevelPoints | None = None
    reason = "TotalSpineSeg not requested"
    if use_tss:
        try:
            primary = run_totalspineseg(series, cache_dir=cache_dir, tss=tss,
                                        study_id=study_id, series_id=series_id)
            if primary.ok:
                return primary
            reason = f"TotalSpineSeg result doubtful: {primary.summary()}"
        except TotalSpineSegUnavailable as err:
            reason = "TotalSpineSeg unavailable"
            if not _warned_unavailable:
                log.warning("%s", err)
                _warned_unavailable = True
        except TotalSpineSegFailed as err:
            reason = f"TotalSpineSeg failed: {str(err).splitlines()[0]}"
            if _warned_failed:
                log.info("study %s series %s: %s", study_id, series_id, reason)
            else:
                log.warning("study %s series %s: %s", study_id, series_id, err)
                _warned_failed = True
    if fallback is None:
        if primary is not None:
            return primary
        log.info("study %s series %s: no localiser result (%s); no fallback given",
                 study_id, series_id, reason)
        return LevelPoints.empty("none", reason=reason, study_id=study_id, series_id=series_id)
    log.info("study %s series %s: using the fallback localiser (%s)", study_id, series_id, reason)
    second = fallback(series, study_id=study_id, series_id=series_id)
    second = replace(second, notes=(*second.notes, reason)).with_provenance(study_id, series_id)
    if primary is not None and primary.confidence > second.confidence:
        return primary
    return second


def tss_runner(mode: str = "auto") -> TotalSpineSeg | None:
    """The TotalSpineSeg runner a ``--tss`` choice asks for (one of :data:`TSS_MODES`).

    ``off``: None. ``auto``: :meth:`TotalSpineSeg.from_env` when the program and its weights are
    found, else None (logged). ``on``: :meth:`TotalSpineSeg.from_env`; raises
    :class:`TotalSpineSegUnavailable` (whose message says how to install it) when absent.
    """
    if mode not in TSS_MODES:
        msg = f"TotalSpineSeg mode must be one of {', '.join(TSS_MODES)}; got {mode!r}"
        raise ValueError(msg)
    if mode == "off":
        return None
    try:
        tss = TotalSpineSeg.from_env()
    except TotalSpineSegUnavailable as err:
        if mode == "on":
            raise
        log.info("TotalSpineSeg not used (%s); the learned localiser places the levels",
                 str(err).splitlines()[0])
        return None
    log.info("TotalSpineSeg finds the levels first: %s", tss.executable)
    return tss


def tss_level_finder(tss: TotalSpineSeg | None,
                     cache_dir: str | os.PathLike) -> Callable[[Any], LevelPoints] | None:
    """``find(volume) -> LevelPoints``: TotalSpineSeg on a sagittal ``Volume`` through
    :func:`localize_series` (no fallback: the caller keeps its own), outputs cached under
    ``cache_dir``; None without a runner (the learned localiser alone)."""
    if tss is None:
        return None
    return functools.partial(localize_series, cache_dir=Path(cache_dir), tss=tss)
