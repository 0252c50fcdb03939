"""Where things are in a competition folder (the real Kaggle data or ``rsna-lumbar synth`` output).

::

    DIR/train.csv
    DIR/train_label_coordinates.csv
    DIR/{train,test}_series_descriptions.csv
    DIR/sample_submission.csv
    DIR/{train,test}_images/{study_id}/{series_id}/{instance_number}.dcm

and where the real sagittal exams of the sim-to-real checks are (:func:`real_exams_dir`,
:func:`real_vb3_dir`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

SPLITS = ("train", "test")
REAL_EXAMS_VAR = "RSNA_REAL_LUMBAR"
REAL_VB3_VAR = "RSNA_REAL_LUMBAR_VB3"


@dataclasses.dataclass(frozen=True)
class CompetitionFolder:
    """Paths of one competition folder; nothing is read until asked."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def train_csv(self) -> Path:
        return self.root / "train.csv"

    @property
    def label_coordinates_csv(self) -> Path:
        return self.root / "train_label_coordinates.csv"

    @property
    def sample_submission_csv(self) -> Path:
        return self.root / "sample_submission.csv"

    def series_descriptions_csv(self, split: str) -> Path:
        return self.root / f"{check_split(split)}_series_descriptions.csv"

    def images(self, split: str) -> Path:
        return self.root / f"{check_split(split)}_images"

    def series_dir(self, split: str, study_id: int, series_id: int) -> Path:
        return self.images(split) / str(int(study_id)) / str(int(series_id))


def check_split(split: str) -> str:
    """Return ``split`` if it is ``train`` or ``test``; raise a ``ValueError`` otherwise."""
    if split not in SPLITS:
        msg = f"unknown split {split!r}; expected one of {SPLITS}"
        raise ValueError(msg)
    return split


def real_exams_dir() -> Path:
    """The folder of the real exams (``ivd_*.npz``): ``$RSNA_REAL_LUMBAR``, else
    ``shared/data/real-lumbar`` beside the repository checkout the kit runs from. The folder
    may not exist (an installed kit, a clone without ``shared/``): callers find no exams then."""
    setting = os.environ.get(REAL_EXAMS_VAR)
    if setting:
        return Path(setting)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-lumbar"


def real_vb3_dir() -> Path:
    """The folder of the real water-fat exams with vertebral bodies segmented (``vb3_*.npz``):
    ``$RSNA_REAL_LUMBAR_VB3``, else ``shared/data/real-lumbar-vb3`` beside the checkout (may not
    exist, as for :func:`real_exams_dir`)."""
    setting = os.environ.get(REAL_VB3_VAR)
    if setting:
        return Path(setting)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-lumbar-vb3"
