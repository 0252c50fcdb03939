"""Measure lumbar proportions and T2 contrast on a sagittal volume: real exams and the phantom alike.

The five real exams (``shared/data/real-lumbar``, found by
:func:`rsna_lumbar.layout.real_exams_dir`) and the phantom (rendered into the same layout by
:func:`phantom_volume`) go through the same :func:`measure`, so the figures in the README compare
like with like.

Layout of a measured volume (the real exams' layout): ``image[z, y, x]`` with 1 mm voxels, axis 0
superior → inferior, axis 1 anterior → posterior, axis 2 lateral. ``discs`` has the same shape with
1 = L5/S1 … 5 = L1/L2 (0 elsewhere).

Figures (mm, degrees, ratios), each the mean over the levels it applies to:

* ``disc_height``: area of the disc's mid-sagittal section divided by its depth (mean height).
* ``disc_depth``: extent of that section along its principal (antero-posterior) axis.
* ``body_height``: centroid distance of adjacent discs minus their mean half heights (L2–L5).
* ``canal_ap``: length of the bright (CSF) run behind each disc's posterior edge, along the
  disc's axis, at half-maximum between the dark annulus edge and the CSF peak.
* ``lordosis``: angle between the L1/L2 and L5/S1 disc axes.
* ``sac_to_skin``: from the middle of that CSF run behind the L3/L4 disc to the posterior skin
  (last tissue voxel before the air), straight back along the image's A–P axis; median of the
  rows within 3 mm of the sac's height. NaN where the body reaches the edge of the image.
* ``fat_thickness``: on the same rows, the bright run at the skin (subcutaneous fat), at
  half-maximum between its peak and the darkest voxel in the 45 mm in front of the skin.
* ``t2_disc`` (median of the mid-sagittal disc sections), ``t2_nucleus`` (their 90th percentile),
  ``t2_marrow``, ``t2_fat``, ``t2_muscle``: intensities as ratios to the CSF behind the discs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from rsna_lumbar.layout import real_exams_dir

FIGURES = (
    "disc_height", "disc_depth", "body_height", "canal_ap", "lordosis", "sac_to_skin",
    "fat_thickness", "t2_disc", "t2_nucleus", "t2_marrow", "t2_fat", "t2_muscle",
)


def _disc_section(discs: np.ndarray, label: int, x_mid: int):
    """Points (z, y) of one disc's section on slice ``x_mid``, its centroid and principal axes."""
    zy = np.argwhere(discs[:, :, x_mid] == label).astype(float)
    if len(zy) < 10:
        return None
    centre = zy.mean(axis=0)
    cov = np.cov((zy - centre).T)
    vals, vecs = np.linalg.eigh(cov)
    major = vecs[:, 1]
    if major[1] < 0:  # point the major axis posteriorly (+y)
        major = -major
    proj = (zy - centre) @ major
    depth = proj.max() - proj.min() + 1.0
    height = len(zy) / depth
    return {"centre": centre, "major": major, "depth": depth, "height": height,
            "posterior": proj.max()}


def _profile(image2d: np.ndarray, start: np.ndarray, direction: np.ndarray, length: int):
    steps = np.arange(length, dtype=float)
    pts = start[:, None] + direction[:, None] * steps[None]
    return ndimage.map_coordinates(image2d.astype(np.float32), pts, order=1, mode="nearest")


def _half_max_run(profile: np.ndarray, peak: int, low: float) -> tuple[int, int]:
    """First and last index of the run around ``peak`` at or above half-way from ``low`` to the
    peak value."""
    above = profile >= low + 0.5 * (profile[peak] - low)
    i0, i1 = peak, peak
    while i0 > 0 and above[i0 - 1]:
        i0 -= 1
    while i1 < len(profile) - 1 and above[i1 + 1]:
        i1 += 1
    return i0, i1


def _back(img: np.ndarray, sac: np.ndarray) -> tuple[float, float]:
    """``(sac_to_skin, fat_thickness)`` behind the point ``sac`` (z, y) of the slice ``img``."""
    air_level = 0.25 * np.percentile(img, 99)
    z0, y0 = int(round(sac[0])), int(round(sac[1]))
    to_skin, fat = [], []
    for z in range(max(z0 - 3, 0), min(z0 + 4, img.shape[0])):
        row = ndimage.uniform_filter1d(img[z], 3)
        tissue = np.nonzero(row[y0:] > air_level)[0]
        if len(tissue) == 0 or y0 + tissue.max() >= len(row) - 2:
            continue  # no tissue, or the back leaves the image
        skin = y0 + int(tissue.max())
        to_skin.append(skin - sac[1])
        window = row[max(skin - 45, y0) : skin + 1]
        peak = len(window) - 1 - int(np.argmax(window[::-1][:35]))
        i0, i1 = _half_max_run(window, peak, float(window[: peak + 1].min()))
        fat.append(i1 - i0 + 1)
    if not to_skin:
        return float("nan"), float("nan")
    return float(np.median(to_skin)), float(np.median(fat))


def measure(image: np.ndarray, discs: np.ndarray) -> dict[str, float]:
    """Figures of one volume (layout in the module docstring); NaN where a figure cannot be had."""
    x_mid = int(round(np.median(np.nonzero(discs)[2])))
    sections = {k: _disc_section(discs, k, x_mid) for k in range(1, 6)}
    sections = {k: s for k, s in sections.items() if s is not None}
    img = image[:, :, x_mid].astype(np.float32)
    out: dict[str, float] = {f: float("nan") for f in FIGURES}
    if len(sections) < 5:
        return out
    out["disc_height"] = float(np.mean([s["height"] for s in sections.values()]))
    out["disc_depth"] = float(np.mean([s["depth"] for s in sections.values()]))
    bodies = []
    for k in range(1, 5):
        lo, hi = sections[k], sections[k + 1]
        gap = np.linalg.norm(lo["centre"] - hi["centre"])
        bodies.append(gap - (lo["height"] + hi["height"]) / 2)
    out["body_height"] = float(np.mean(bodies))
    a1, a5 = sections[5]["major"], sections[1]["major"]
    out["lordosis"] = float(np.degrees(np.arccos(np.clip(abs(a1 @ a5), -1, 1))))
    canal, csf, sac = [], [], {}
    for k, s in sections.items():
        edge = s["centre"] + s["major"] * s["posterior"]
        prof = _profile(img, edge, s["major"], 30)
        peak_i = int(np.argmax(prof[:25]))
        i0, i1 = _half_max_run(prof, peak_i, float(prof[:3].min()))
        canal.append(i1 - i0 + 1)
        sac[k] = edge + s["major"] * (i0 + i1) / 2
        csf.append(float(np.median(prof[i0 : i1 + 1])))
    out["canal_ap"] = float(np.mean(canal))
    out["sac_to_skin"], out["fat_thickness"] = _back(img, sac[3])
    csf_value = float(np.median(csf))
    disc_vals = img[discs[:, :, x_mid] > 0]
    marrow = []
    for k in range(1, 5):
        c = (sections[k]["centre"] + sections[k + 1]["centre"]) / 2
        z, y = int(round(c[0])), int(round(c[1]))
        marrow.append(np.median(img[z - 4 : z + 5, y - 4 : y + 5]))
    # Posterior soft tissues between L1/L2 and L4/L5, on the midline slice: the last bright run
    # before the air is subcutaneous fat; muscle lies between the canal and that fat.
    z0 = int(round(sections[5]["centre"][0]))
    z1 = int(round(sections[2]["centre"][0]))
    canal_back = int(round(max(s["centre"][1] + s["posterior"] for s in sections.values()))) + 25
    fat, muscle = [], []
    lateral = [x for x in (x_mid - 15, x_mid + 15) if 0 <= x < image.shape[2]]
    for z in range(z0, z1, 3):
        row = ndimage.uniform_filter1d(img[z].astype(np.float32), 3)
        tissue = np.nonzero(row > 0.25 * np.percentile(img, 99))[0]
        if len(tissue) == 0:
            continue
        skin = tissue.max()
        fat_run = row[max(skin - 12, 0) : skin + 1]
        fat.append(float(np.percentile(fat_run, 80)))
        for x in lateral:
            lat = image[z, :, x].astype(np.float32)
            seg = lat[canal_back : max(skin - 15, canal_back + 1)]
            if len(seg) > 5:
                muscle.append(float(np.percentile(seg, 30)))
    out["t2_disc"] = float(np.median(disc_vals)) / csf_value
    out["t2_nucleus"] = float(np.percentile(disc_vals, 90)) / csf_value
    out["t2_marrow"] = float(np.median(marrow)) / csf_value
    out["t2_fat"] = float(np.median(fat)) / csf_value if fat else float("nan")
    out["t2_muscle"] = float(np.median(muscle)) / csf_value if muscle else float("nan")
    return out


def real_exams(folder: Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (image, discs)}`` of the real exams found in ``folder`` (default
    :func:`rsna_lumbar.layout.real_exams_dir`; empty if absent)."""
    folder = Path(folder) if folder is not None else real_exams_dir()
    return {
        p.stem: (np.load(p)["image"], np.load(p)["discs"]) for p in sorted(folder.glob("ivd_*.npz"))
    }


def measure_real(folder: Path | None = None) -> dict[str, dict[str, float]]:
    return {name: measure(img, discs) for name, (img, discs) in real_exams(folder).items()}


def phantom_volume(seed: int, size: tuple[int, int, int] = (221, 221, 37), healthy: bool = True):
    """A phantom study rendered as T2 into the real exams' layout (1 mm, see module docstring).

    ``healthy`` draws the latent severity one standard deviation below its mean at every
    level (little degeneration, no stenosis), like the asymptomatic young adults of the real
    exams; ``False`` draws it as the generator does.

    Returns ``(image float32 (Z, Y, X), discs uint8 (Z, Y, X) with 1 = L5/S1 … 5 = L1/L2)``.
    Axis 1 is LPS +y (anterior → posterior), axis 0 is −z (superior → inferior), axis 2 is +x.
    """
    from rsna_lumbar.synth import severity
    from rsna_lumbar.synth.anatomy import sample_spine
    from rsna_lumbar.synth.contrast import add_rician_noise, intensity_table, texture
    from rsna_lumbar.synth.phantom import label_points

    rng = np.random.default_rng([seed, 7])
    latent = severity.sample_latent(rng)
    if healthy:
        mu, sd = severity.latent_parameters()
        latent = mu - sd
    spine = sample_spine(rng, latent, severity.degeneration_from_latent(latent))
    centre = spine.to_world(0.0, spine.body_t[5], 25.0)  # 25 mm behind L3: the skin stays inside
    nz, ny, nx = size
    z = centre[2] - (np.arange(nz) - nz / 2)
    y = centre[1] + (np.arange(ny) - ny / 2)
    x = centre[0] + (np.arange(nx) - nx // 2)
    grid = np.stack(np.meshgrid(z, y, x, indexing="ij"), -1)[..., ::-1]  # (Z, Y, X, [x, y, z])
    tissue, tss = label_points(spine, grid.reshape(-1, 3))
    mean, amp = intensity_table(rng, "T2", spine.degeneration)
    image = mean[tissue] * (1 + amp[tissue] * texture(grid.reshape(-1, 3), spine.waves))
    image = add_rician_noise(image, 0.02, rng).reshape(size)
    discs = np.zeros(tss.shape, np.uint8)
    for value, label in zip((100, 95, 94, 93, 92), (1, 2, 3, 4, 5)):
        discs[tss == value] = label
    return image.astype(np.float32), discs.reshape(size)


def measure_phantoms(seeds=range(5)) -> dict[str, dict[str, float]]:
    return {f"phantom_{s}": measure(*phantom_volume(s)) for s in seeds}


def figure(out_png: str | Path, seed: int = 0, real_name: str = "ivd_20") -> Path:
    """Side-by-side mid-sagittal T2 of a real exam and a phantom, with both sets of figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    real = real_exams()
    table = pd.DataFrame({**{n: measure(*v) for n, v in real.items()}, **measure_phantoms()}).T
    img_r, discs_r = real[real_name]
    img_p, discs_p = phantom_volume(seed)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1, 1.25]})
    for ax, (img, discs, name) in zip(axes, [(img_r, discs_r, f"real {real_name}"),
                                             (img_p, discs_p, f"phantom seed {seed}")]):
        k = int(round(np.median(np.nonzero(discs)[2])))
        sl = img[:, :, k]
        ax.imshow(sl, cmap="gray", clim=(0, np.percentile(sl, 99.5)))
        ax.contour(discs[:, :, k] > 0, levels=[0.5], colors="r", linewidths=0.5)
        ax.set_title(f"{name}: mid-sagittal T2, 1 mm", fontsize=9)
        ax.set_axis_off()
    is_real = table.index.str.startswith("ivd")
    summary = pd.DataFrame({
        "real min": table[is_real].min(), "real max": table[is_real].max(),
        "phantom min": table[~is_real].min(), "phantom max": table[~is_real].max()}).round(2)
    axes[2].set_axis_off()
    axes[2].table(cellText=summary.values, rowLabels=summary.index, colLabels=summary.columns,
                  loc="center", fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=70)
    plt.close(fig)
    return out_png
