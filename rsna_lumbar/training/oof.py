"""The out-of-fold (OOF) files, from :func:`rsna_lumbar.models.forward.predict_logits`'s logits.

* :func:`oof_frame` — one row per (study, target) of a fold: ``row_id, study_id, fold, family,
  predicted, label, logit_normal_mild, logit_moderate, logit_severe``; rows the network could not
  predict (no view in the cache) carry the training folds' class priors as log-probabilities and
  ``predicted = 0``.
* :func:`submission_from_logits` — the submission-format CSV (``row_id`` + 3 probabilities)
  that ``rsna-lumbar score`` reads, optionally with per-family temperatures.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from rsna_lumbar.models.dataset import family_slots
from rsna_lumbar.models.forward import softmax
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, TARGETS, Condition

LOGIT_COLUMNS = tuple(f"logit_{c}" for c in PROBABILITY_COLUMNS)


def oof_frame(fold: int, study_ids, outputs, priors: np.ndarray,
              labels: Mapping[int, Mapping[str, int]], missing=()) -> pd.DataFrame:
    """OOF rows of one fold (module docstring), sorted by study. ``priors``: (25, 3) of the
    training folds; ``missing``: the fold's studies without crops (every row a prior)."""
    position = {s: i for i, s in enumerate(study_ids)}
    log_priors = np.log(np.clip(priors, 1e-12, None))
    records = []
    for study in sorted({*position, *(int(s) for s in missing)}):
        slot_of = {}
        if study in position:
            i = position[study]
            for f, (logits, predicted) in outputs.items():
                for n, (condition, level) in enumerate(family_slots(f)):
                    slot_of[(condition, level)] = (logits[i, n], bool(predicted[i, n]))
        for t, (condition, level) in enumerate(TARGETS):
            column = f"{condition.value}_{level.value}"
            logit, predicted = slot_of.get((condition.value, level.value), (None, False))
            values = logit if predicted else log_priors[t]
            records.append((f"{study}_{column}", study, fold, condition.family.value, int(predicted),
                            labels.get(study, {}).get(column, -1), *map(float, values)))
    return pd.DataFrame(records, columns=["row_id", "study_id", "fold", "family", "predicted",
                                          "label", *LOGIT_COLUMNS])


def probabilities(frame: pd.DataFrame, temperatures: Mapping[str, float] | None = None) -> np.ndarray:
    """(N, 3) probabilities of an OOF frame; temperatures apply to predicted rows only."""
    logits = frame[list(LOGIT_COLUMNS)].to_numpy(np.float64)
    t = np.ones(len(frame))
    if temperatures:
        t = frame["family"].map(lambda f: temperatures.get(f, 1.0)).to_numpy(np.float64)
        t = np.where(frame["predicted"].to_numpy() == 1, t, 1.0)
    return softmax(logits, t[:, None])


def submission_from_logits(frame: pd.DataFrame, temperatures=None) -> pd.DataFrame:
    """``row_id,normal_mild,moderate,severe`` rows of an OOF frame, sorted by row_id."""
    probs = probabilities(frame, temperatures)
    out = pd.DataFrame(probs, columns=list(PROBABILITY_COLUMNS))
    out.insert(0, "row_id", frame["row_id"].to_numpy())
    return out.sort_values("row_id", kind="stable").reset_index(drop=True)


assert all(c.family.value for c in Condition)
