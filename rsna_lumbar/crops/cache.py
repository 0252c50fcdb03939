"""Reading a crop cache: the folder :mod:`rsna_lumbar.crops.stage` writes (its layout:
:mod:`rsna_lumbar.crops`).

:class:`CropCache` checks ``index.csv`` against the columns the stage writes
(:data:`~rsna_lumbar.crops.stage.INDEX_COLUMNS`) and serves each study's ``{study}.npz`` as
``{condition}/{level}/{view}`` → float16 ``(S, H, W)`` arrays, optionally kept in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from rsna_lumbar.crops.stage import INDEX_COLUMNS, read_geometry


class CropCache:
    """Read access to a crop cache folder (``index.csv`` + ``{study}.npz``)."""

    def __init__(self, root: str | os.PathLike, keep_in_memory: bool = False):
        self.root = Path(root)
        index = self.root / "index.csv"
        if not index.is_file():
            msg = f"{index} not found; build the crop cache first ('rsna-lumbar crops')"
            raise FileNotFoundError(msg)
        frame = pd.read_csv(index, dtype={"side": str})
        missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{index} lacks columns {missing}; rebuild the crop cache")
        self.index = frame
        self.geometry = read_geometry(self.root)  # each view's mm, pixels and slices
        self.files = frame.groupby("study_id")["file"].first().to_dict()
        self._memory: dict[int, dict[str, np.ndarray]] | None = {} if keep_in_memory else None

    @property
    def study_ids(self) -> list[int]:
        return sorted(int(s) for s in self.files)

    def arrays(self, study_id: int) -> dict[str, np.ndarray]:
        """``{condition}/{level}/{view}`` → float16 ``(S, H, W)`` of one study."""
        if self._memory is not None and study_id in self._memory:
            return self._memory[study_id]
        with np.load(self.root / self.files[study_id]) as npz:
            arrays = {k: npz[k] for k in npz.files}
        if self._memory is not None:
            self._memory[study_id] = arrays
        return arrays
