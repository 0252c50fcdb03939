"""Training jitter sized from a localiser's measured error (``data.point_jitter``).

At inference the severity crops are centred on the localiser's points, not on the labelled
ones; training on crops jittered by about the localiser's error teaches the models to grade an
off-centre crop (the competition winners' key trick: ``docs/competition.md``).

The localiser's out-of-fold metrics (``rsna-lumbar localize --split train`` →
``MODEL/metrics.json``, key ``view_errors``, see
:mod:`rsna_lumbar.localize.evaluate`) give, per family and crop view, percentiles
of the in-plane error (mm) and of the through-plane error (slices). The jitter of a view is
the :data:`QUANTILE` th percentile of each, capped so the structure stays in the crop: at most
:data:`CROP_FRACTION_CAP` of the crop's side in-plane, and at most ``(n − 1) // 2`` slices for
a crop of ``n`` slices (the window's centre stays inside the crop).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rsna_lumbar.crops.recipes import DEFAULT_GEOMETRY, Geometry, crop_spec

QUANTILE = 75
CROP_FRACTION_CAP = 0.25


def point_jitter_from(localizer: str | os.PathLike, quantile: int = QUANTILE,
                      geometry: Geometry = DEFAULT_GEOMETRY) -> dict[str, dict[str, tuple[float, int]]]:  # fmt: skip
    """``{family: {view: (± in-plane mm, ± slices)}}`` from a localiser folder's metrics,
    capped by the crops of ``geometry`` (the training crop cache's).

    Raises:
        FileNotFoundError: no ``metrics.json`` (train the localiser out of fold first).
        KeyError: the metrics predate ``view_errors`` or lack the requested percentile.
    """
    path = Path(localizer)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        msg = (f"{path} not found: --jitter-from takes a localiser folder trained out of fold "
               f"('rsna-lumbar localize --split train --model DIR') or its metrics.json")
        raise FileNotFoundError(msg)
    errors = json.loads(path.read_text()).get("view_errors")
    if not errors:
        msg = (f"{path} has no 'view_errors': the localiser was measured by an older kit; "
               f"retrain it with 'rsna-lumbar localize --split train'")
        raise KeyError(msg)
    jitter: dict[str, dict[str, tuple[float, int]]] = {}
    for family, views in errors.items():
        for view, measured in views.items():
            spec = crop_spec(family, view, geometry)
            mm = min(float(measured[f"in_plane_p{quantile}_mm"]), CROP_FRACTION_CAP * spec.size_mm)
            slices = min(int(round(float(measured[f"slices_p{quantile}"]))), (spec.n_slices - 1) // 2)
            jitter.setdefault(family, {})[view] = (round(mm, 2), slices)
    return jitter


def jitter_override(localizer: str | os.PathLike, geometry: Geometry = DEFAULT_GEOMETRY) -> str:
    """The ``data.point_jitter=...`` command-line override for :func:`point_jitter_from`."""
    jitter = point_jitter_from(localizer, geometry=geometry)
    plain = {f: {v: list(a) for v, a in views.items()} for f, views in jitter.items()}
    return "data.point_jitter=" + json.dumps(plain, separators=(",", ":"))
