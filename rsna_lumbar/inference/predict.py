"""``predict``: every study of a split → 25 rows of probabilities, never a missing row.

Today the chain is: list the split's studies from ``{split}_series_descriptions.csv`` → class
priors from the model folder's ``priors.json`` (uniform, logged, when absent) → validated,
atomically written submission. Trained-model inference slots in per study; a study the models
cannot handle keeps its priors, with the reason logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from rsna_lumbar.priors import load_priors, prior_submission, uniform_priors
from rsna_lumbar.submission import write_submission
from rsna_lumbar.tables import split_study_ids

LOGGER = logging.getLogger(__name__)
PRIORS_FILE = "priors.json"


def fallback_priors(models: str | os.PathLike | None):
    """(25, 3) priors from ``models/priors.json``, else uniform; the choice is logged."""
    path = Path(models) / PRIORS_FILE if models is not None else None
    if path is not None and path.is_file():
        LOGGER.info("fallback probabilities: class priors from %s", path)
        return load_priors(path)
    LOGGER.warning("no %s in %s: the fallback is uniform probabilities", PRIORS_FILE, models)
    return uniform_priors()


def predict_split(
    data: str | os.PathLike, split: str, out: str | os.PathLike, models: str | os.PathLike | None
) -> pd.DataFrame:
    """Write a complete submission for ``split`` of the competition folder ``data`` to ``out``."""
    study_ids = split_study_ids(data, split)
    priors = fallback_priors(models)
    submission = prior_submission(priors, study_ids)
    write_submission(submission, out, study_ids)
    LOGGER.info("wrote %d rows for %d studies to %s", len(submission), len(study_ids), out)
    return submission
