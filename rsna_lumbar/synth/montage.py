"""A picture of one study as the kit reads it: sagittal T2 and T1 slices and one axial slice per
level, with the label points of ``train_label_coordinates.csv`` drawn on the slice they name.

Everything goes through the project's own loader (:func:`rsna_lumbar.dicom.reader.load_series`),
so the picture also checks that the DICOM files read back with their labels in place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

_COLOURS = {"Spinal": "#ff3b30", "Left": "#34c759", "Right": "#0a84ff"}


def _window(image: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(image, [1, 99.5])
    return float(lo), float(max(hi, lo + 1))


def _volume(data: Path, split: str, study_id: int, series_id: int):
    from rsna_lumbar.dicom.reader import load_series

    return load_series(data / f"{split}_images" / str(study_id) / str(series_id),
                       study_id=study_id, series_id=series_id)


def _slice_with(volume, instance: int) -> int:
    return int(np.nonzero(volume.instance_numbers == instance)[0][0])


def draw_study(data: str | Path, study_id: int | None, out_png: str | Path, dpi: int = 60) -> Path:
    """Write the montage of ``study_id`` (default: the first train study) to ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = Path(data)
    series = pd.read_csv(data / "train_series_descriptions.csv")
    coords = pd.read_csv(data / "train_label_coordinates.csv")
    study_id = int(series.study_id.iloc[0]) if study_id is None else int(study_id)
    series = series[series.study_id == study_id]
    coords = coords[coords.study_id == study_id]
    fig, axes = plt.subplots(2, 5, figsize=(15, 6.6), gridspec_kw={"height_ratios": [1.25, 1]})
    for ax in axes.flat:
        ax.set_axis_off()
    panels = [("Sagittal T2/STIR", "Spinal Canal Stenosis", None),
              ("Sagittal T1", "Left Neural Foraminal Narrowing", None),
              ("Sagittal T1", "Right Neural Foraminal Narrowing", None),
              ("Sagittal T1", None, "mid"), ("Sagittal T2/STIR", None, "mid")]
    for ax, (desc, condition, mode) in zip(axes[0], panels):
        sid = series[series.series_description == desc].series_id
        if sid.empty:
            continue
        vols = _volume(data, "train", study_id, int(sid.iloc[0]))
        if not vols:
            continue
        vol = vols[0]
        pts = coords[(coords.series_id == int(sid.iloc[0])) & (coords.condition == condition)]
        if mode == "mid" or pts.empty:
            k = vol.pixels.shape[0] // 2
            pts = pts.iloc[0:0]
        else:
            k = _slice_with(vol, int(pts.instance_number.mode().iloc[0]))
        ax.imshow(vol.pixels[k], cmap="gray", clim=_window(vol.pixels[k]))
        colour = _COLOURS[(condition or "Spinal").split()[0]]
        ax.scatter(pts.x, pts.y, s=28, facecolors="none", edgecolors=colour, linewidths=1.4)
        title = f"{desc} slice {k + 1}/{vol.pixels.shape[0]}"
        ax.set_title(title + (f"\n{condition}" if condition and len(pts) else "\nmid slice"), fontsize=8)
    axial = coords[coords.condition.str.contains("Subarticular")]
    for ax, level in zip(axes[1], ["L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"]):
        rows = axial[axial.level == level]
        ax.set_title(f"Axial T2 {level}" + ("" if len(rows) else " (not covered)"), fontsize=8)
        if rows.empty:
            continue
        first = rows.iloc[0]
        for vol in _volume(data, "train", study_id, int(first.series_id)):
            if int(first.instance_number) in set(vol.instance_numbers.tolist()):
                k = _slice_with(vol, int(first.instance_number))
                ax.imshow(vol.pixels[k], cmap="gray", clim=_window(vol.pixels[k]))
                for _, r in rows.iterrows():
                    ax.scatter([r.x], [r.y], s=28, facecolors="none", linewidths=1.4,
                               edgecolors=_COLOURS[r.condition.split()[0]])
    labels = pd.read_csv(data / "train.csv").set_index("study_id").loc[study_id]
    worst = labels[labels.isin(["Moderate", "Severe"])]
    note = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in list(worst.items())[:6]) or "all Normal/Mild"
    fig.suptitle(f"synthetic study {study_id} — {note}", fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png
