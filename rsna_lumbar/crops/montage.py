"""A picture per study: the middle slice of every crop, one row per condition, one column per level.

The centre of each crop (where the point is) is marked, so a person can check in seconds that
the canal, foramina and recesses sit where they should.
"""

from __future__ import annotations

import os

import numpy as np

from rsna_lumbar.atomic import atomic_path
from rsna_lumbar.vocabulary import CONDITIONS, LEVELS, VIEWS


def save_montage(npz: str | os.PathLike, out: str | os.PathLike, title: str = "") -> None:
    """Render ``{study}.npz`` of a crop cache to a PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = np.load(npz)
    rows = [(c, view) for c in CONDITIONS for view in VIEWS[c.family.value]]
    fig, axes = plt.subplots(len(rows), len(LEVELS), figsize=(1.6 * len(LEVELS), 1.6 * len(rows)))
    for r, (condition, view) in enumerate(rows):
        for col, level in enumerate(LEVELS):
            ax = axes[r, col]
            ax.set_xticks([])
            ax.set_yticks([])
            key = f"{condition.value}/{level.value}/{view}"
            if key in arrays:
                patch = arrays[key].astype(np.float32)
                middle = patch[len(patch) // 2]
                ax.imshow(middle, cmap="gray", vmin=-0.5, vmax=1.0)
                h, w = middle.shape
                ax.plot([(w - 1) / 2], [(h - 1) / 2], "+", color="yellow", markersize=8)
            else:
                ax.set_facecolor("#402020")
                ax.text(0.5, 0.5, "missing", ha="center", va="center", color="white",
                        fontsize=7, transform=ax.transAxes)  # fmt: skip
            if r == 0:
                ax.set_title(level.title, fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{condition.title}\n{view}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
