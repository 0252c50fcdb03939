"""Find the five lumbar disc levels of a sagittal series, in world coordinates (LPS mm).

Every localiser returns a :class:`LevelPoints`. :func:`run_totalspineseg` runs TotalSpineSeg
(when it and its weights are installed, see :mod:`rsna_lumbar.localize.totalspineseg`) on one
series and parses its label maps; it raises when TotalSpineSeg is unavailable or fails.

The localise stage (:mod:`rsna_lumbar.localize.stage`) holds the one fallback chain:
per study it tries a level finder first and uses the learned localiser wherever the finder
raises or its result is doubtful. :func:`tss_runner` turns a ``--tss auto|on|off`` choice into
a runner, and :func:`tss_level_finder` into the stage's level finder.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
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

__all__ = [
    "POINT_KINDS", "Flag", "LabelMap", "LevelPoints", "PointKind", "SanityLimits",
    "TotalSpineSeg", "TotalSpineSegError", "TotalSpineSegFailed", "TotalSpineSegUnavailable",
    "TSS_MODES", "export_volume", "parse_tss_output", "points_from_labels",
    "run_totalspineseg", "tss_level_finder", "tss_runner",
]
TSS_MODES = ("auto", "on", "off")


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
    """``find(volume) -> LevelPoints``: TotalSpineSeg on a sagittal ``Volume``
    (:func:`run_totalspineseg`, raising when it fails: the points stage then keeps the learned
    localiser's levels), outputs cached under ``cache_dir``; None without a runner (the learned
    localiser alone)."""
    if tss is None:
        return None
    return functools.partial(run_totalspineseg, cache_dir=Path(cache_dir), tss=tss)
