"""Small crop caches in the exact ``rsna_lumbar.crops`` format, with a learnable grade pattern.

Every view of a sample is noise plus a dark horizontal band whose half-width grows with the grade
(half-width 1, 2, 3 px at 16 px for Normal/Mild, Moderate, Severe; scaled with the size). Labels follow a
class balance like the real one but richer in Moderate/Severe so small folds contain all grades.
Views go missing at random (a study without axial coverage), and some labels are missing (−1).
The Bayes floor is near 0 when ``noise`` is small; ``jitter`` moves the band so it is not trivial.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rsna_lumbar.crops.stage import INDEX_COLUMNS
from rsna_lumbar.vocabulary import CONDITIONS, LEVELS, SEVERITIES, VIEWS, target_column

FREQUENCIES = {"spinal": (0.6, 0.25, 0.15), "foraminal": (0.6, 0.28, 0.12),
               "subarticular": (0.55, 0.3, 0.15)}


def _view(rng, grade: int, slices: int, size: int, noise: float, jitter: int) -> np.ndarray:
    image = rng.normal(0.0, noise, size=(slices, size, size)).astype(np.float32)
    half = max(1, round((1 + grade) * size / 16))
    centre = size // 2 + int(rng.integers(-jitter, jitter + 1))
    image[:, max(0, centre - half):centre + half + 1, :] -= 1.5
    image[slices // 2] -= 0.3  # the middle slice is on the point
    return image.astype(np.float16)


def make_crop_cache(root, n_studies: int = 40, seed: int = 0, slices: int = 5, size: int = 32,
                    noise: float = 0.6, jitter: int = 2, missing_view: float = 0.1,
                    missing_label: float = 0.02, k: int = 4):
    """Write a crop cache under ``root`` and return ``(cache_dir, train_csv, folds_csv)``.

    ``train_csv`` is a ``train.csv`` with the same grades, ``folds_csv`` a ``study_id,fold``
    file with ``k`` folds (round robin).
    """
    root = Path(root)
    cache = root / "crops"
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_ids = sorted(int(s) for s in rng.choice(np.arange(10**6, 10**7), n_studies, replace=False))
    index, train = [], []
    for study_id in study_ids:
        arrays, labels = {}, {"study_id": study_id}
        no_axial = rng.random() < missing_view
        for condition in CONDITIONS:
            family = condition.family.value
            for level in LEVELS:
                grade = int(rng.choice(3, p=FREQUENCIES[family]))
                label = -1 if rng.random() < missing_label else grade
                labels[target_column(condition, level)] = (
                    SEVERITIES[label].value if label >= 0 else None
                )
                cut = [v for v in VIEWS[family] if not (v == "axial" and no_axial)]
                for view in cut:
                    key = f"{condition.value}/{level.value}/{view}"
                    arrays[key] = _view(rng, grade, slices, size, noise, jitter)
                index.append((study_id, condition.value, level.value, family,
                              condition.side.value if condition.side else "",
                              f"{study_id}.npz", label, ";".join(sorted(cut))))
        np.savez(cache / f"{study_id}.npz", **arrays)
        train.append(labels)
    pd.DataFrame(index, columns=list(INDEX_COLUMNS)).to_csv(cache / "index.csv", index=False)
    train_csv = root / "train.csv"
    pd.DataFrame(train).to_csv(train_csv, index=False)
    folds_csv = root / "folds.csv"
    pd.DataFrame({"study_id": study_ids, "fold": np.arange(n_studies) % k}).to_csv(
        folds_csv, index=False)
    return cache, train_csv, folds_csv
