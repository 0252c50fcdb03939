"""Labels that look mislabelled, judged out of fold (confident learning).

Readers disagree near the grade boundaries, and a model trained on their labels is told both
ways. Given out-of-fold probabilities — every row graded by a model that did not train on it —
a labelled row is a *suspect* when the model is less sure of its label than it usually is of
that grade and at least as sure of another grade as it usually is of that one:

* per family ``f`` and grade ``k``, the threshold ``t_k`` is the mean OOF probability of ``k``
  over the family's rows labelled ``k`` (the model's self-confidence on the grade);
* row ``i`` labelled ``y`` is a suspect when ``p_iy < t_y`` and some ``j ≠ y`` has
  ``p_ij ≥ t_j``; its suggested grade is the most probable such ``j``.

(Northcutt, Jiang and Chuang, "Confident learning", JAIR 2021, the off-diagonal of the
confident joint.) :func:`find_suspects` lists them; :func:`against_truth` counts how many are
labels the reader really got wrong where that is known — the synthetic generator's latent
severity grades every target without reader noise (``truth/latent.csv``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from rsna_lumbar.atomic import write_csv
from rsna_lumbar.tables import labels_long
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, Condition


def find_suspects(probabilities: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Suspect labels among the labelled rows of an out-of-fold submission.

    Args:
        probabilities: ``row_id`` + the three probability columns (submission format), out of
            fold; rows of studies or targets without a label are ignored.
        train: ``train.csv`` (:func:`rsna_lumbar.tables.read_train`).

    Returns:
        One row per labelled row judged: ``row_id, study_id, family, label, suggested,
        p_label, suspect`` (``suggested`` = ``label`` where not a suspect).
    """
    labels = labels_long(train)
    frame = labels.merge(probabilities, on="row_id", how="inner")
    frame["family"] = frame.condition.map(lambda c: Condition(c).family.value)
    p = frame[list(PROBABILITY_COLUMNS)].to_numpy(np.float64)
    y = frame["severity"].to_numpy(np.int64)
    on_label = p[np.arange(len(y)), y]
    thresholds = np.empty_like(p)  # each row's family's per-grade self-confidence
    for family in frame.family.unique():
        rows = (frame.family == family).to_numpy()
        thresholds[rows] = [p[rows & (y == k), k].mean() if (rows & (y == k)).any() else np.inf
                            for k in range(3)]  # fmt: skip
    # the other grades the model is as sure of as it usually is: the most probable is suggested
    others = np.where(p >= thresholds, p, -np.inf)
    others[np.arange(len(y)), y] = -np.inf
    suspect = (on_label < thresholds[np.arange(len(y)), y]) & np.isfinite(others.max(axis=1))
    suggested = np.where(suspect, others.argmax(axis=1), y)
    return pd.DataFrame({"row_id": frame.row_id, "study_id": frame.study_id,
                         "family": frame.family, "label": y, "suggested": suggested,
                         "p_label": on_label.round(6), "suspect": suspect})  # fmt: skip


def against_truth(suspects: pd.DataFrame, true_grades: pd.DataFrame) -> dict:
    """How many suspects are real reader errors, per family and overall.

    Args:
        suspects: :func:`find_suspects`'s frame.
        true_grades: ``study_id`` + the 25 target columns holding grade indices 0/1/2 without
            reader noise (e.g. :func:`rsna_lumbar.synth.severity.latent_grades` of
            ``truth/latent.csv``).

    Returns:
        ``{family or "all": {labelled, mislabelled, suspects, found, precision, recall}}`` where
        ``mislabelled`` counts the judged rows whose label differs from the true grade and
        ``found`` the suspects among them.
    """
    truth = true_grades.melt(id_vars="study_id", var_name="target", value_name="true")
    truth["row_id"] = truth.study_id.astype(int).astype(str) + "_" + truth.target
    frame = suspects.merge(truth[["row_id", "true"]], on="row_id", how="inner")
    wrong = frame.label.to_numpy() != frame.true.to_numpy()
    out = {}
    for name in ("all", *sorted(frame.family.unique())):
        rows = np.ones(len(frame), bool) if name == "all" else (frame.family == name).to_numpy()
        flagged = rows & frame.suspect.to_numpy()
        found = int((flagged & wrong).sum())
        out[name] = {"labelled": int(rows.sum()), "mislabelled": int((rows & wrong).sum()),
                     "suspects": int(flagged.sum()), "found": found,
                     "precision": round(found / flagged.sum(), 4) if flagged.any() else None,
                     "recall": round(found / (rows & wrong).sum(), 4) if (rows & wrong).any()
                     else None}  # fmt: skip
    return out


DROP_LIST = "drop_labels.csv"
"""The copy of ``data.drop_labels`` a model folder keeps: the list its folds trained without."""


def keep_drop_list(csv, out) -> None:
    """Copy the list ``csv`` into the model folder ``out`` (:data:`DROP_LIST`) for its first
    training; a folder that already keeps a list must be resumed with the same rows.

    Raises:
        FileNotFoundError: ``csv`` does not exist.
        ValueError: ``out`` trained with another list.
    """
    if not os.path.isfile(csv):
        raise FileNotFoundError(f"data.drop_labels: {csv} is not a file (a CSV with a row_id "
                                "column, such as a run's WORK/label_suspects.csv)")
    rows = sorted(pd.read_csv(csv, usecols=["row_id"]).row_id.astype(str))
    kept = Path(out) / DROP_LIST
    if kept.is_file():
        if sorted(pd.read_csv(kept).row_id.astype(str)) != rows:
            raise ValueError(f"{out} trained without the labels of {kept}, not those of {csv}: "
                             "pass --force to retrain from scratch, or choose another --out")
        return
    write_csv(pd.DataFrame({"row_id": rows}), kept)


def drop_labels(labels: dict[int, dict[str, int]], csv) -> tuple[dict[int, dict[str, int]], int]:
    """``labels`` (:func:`rsna_lumbar.models.dataset.labels_by_study`) without the rows listed
    in ``csv`` (a ``row_id`` column, e.g. ``WORK/label_suspects.csv``), and how many it
    dropped. The training reads them as unlabelled; the out-of-fold grading keeps them."""
    listed = pd.read_csv(csv, usecols=["row_id"]).row_id.astype(str)
    by_study: dict[int, set[str]] = {}
    for row_id in listed:
        study, target = row_id.split("_", 1)
        by_study.setdefault(int(study), set()).add(target)
    out, dropped = {}, 0
    for study, targets in labels.items():
        gone = by_study.get(int(study), set())
        out[study] = {t: grade for t, grade in targets.items() if t not in gone}
        dropped += len(targets) - len(out[study])
    return out, dropped
