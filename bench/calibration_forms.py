"""``python -m bench.calibration_forms WORK OUT COMMAND``: is a richer calibration than one
temperature per family worth it, out of fold at the localiser's points?

Reads a finished ``rsna-lumbar run`` (``WORK/summary.json``, its ``data/train.csv``,
``folds.csv`` and each member's ``oof_logits_on_crops.csv`` — the logits at the localiser's
points, since the run grades those last) and scores the members' mean three ways, each
calibration fitted per family on the other folds only (cross-fitted, as ``report`` does):

* ``temperature`` — what the kit ships (``oof_calibrated.csv``: ``T_f``, kept only where the
  cross-fit helped);
* ``temperature_bias`` — ``softmax(z / T_f + b_f)``, two free class offsets per family (vector
  scaling's intercepts: a model whose class balance is off at the localiser's points);
* ``temperature_prior_mix`` — ``(1 − w_f)·softmax(z / T_f) + w_f·prior``, the training folds'
  class prior of the row's target (a floor under confidently wrong grades of a crop on the wrong
  level).

Run it on a development run, not on the run whose score is reported: the form is chosen there.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from bench.__main__ import _commit
from rsna_lumbar.atomic import write_text
from rsna_lumbar.folds import read_folds
from rsna_lumbar.metric import any_severe_log_loss, score_submission, weighted_log_loss
from rsna_lumbar.models.forward import softmax
from rsna_lumbar.priors import class_priors
from rsna_lumbar.tables import read_train
from rsna_lumbar.training.oof import LOGIT_COLUMNS
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, TARGET_COLUMNS

FAMILIES = ("spinal", "foraminal", "subarticular")
TERMS = ("score", "spinal", "foraminal", "subarticular", "any_severe_spinal")
START = {"temperature_bias": [0.0, 0.0, 0.0], "temperature_prior_mix": [0.0, -3.0]}


def calibrated(form: str, theta: np.ndarray, logits: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """``(N, 3)`` probabilities of ``logits`` ``(N, 3)`` under ``form`` with parameters ``theta``
    (``theta[0]`` = log temperature); ``priors`` ``(N, 3)``: each row's class prior."""
    scaled = logits / np.exp(theta[0])
    if form == "temperature_bias":
        return softmax(scaled + np.array([0.0, theta[1], theta[2]]))
    weight = 1.0 / (1.0 + np.exp(-theta[1]))
    return (1.0 - weight) * softmax(scaled) + weight * priors


def _loss(form, theta, rows: pd.DataFrame, priors: np.ndarray, family: str) -> float:
    p = calibrated(form, theta, rows[list(LOGIT_COLUMNS)].to_numpy(np.float64), priors)
    labels = rows["label"].to_numpy(np.int64)
    loss = weighted_log_loss(labels, p)
    if family == "spinal":  # the metric's other use of the spinal probabilities
        loss += any_severe_log_loss(rows["study_id"].to_numpy(), labels, p[:, 2])
    return loss


def _row_priors(frame: pd.DataFrame, train: pd.DataFrame) -> np.ndarray:
    """``(N, 3)``: each row's target prior from the studies of the other folds."""
    target = frame.row_id.str.split("_", n=1).str[1].map(
        {c: i for i, c in enumerate(TARGET_COLUMNS)}).to_numpy()
    out = np.zeros((len(frame), 3))
    for fold in frame.fold.unique():
        rows = (frame.fold == fold).to_numpy()
        others = set(frame.study_id[frame.fold != fold])
        out[rows] = class_priors(train[train.study_id.isin(others)])[target[rows]]
    return out


def cross_fitted(frame: pd.DataFrame, train: pd.DataFrame, form: str) -> pd.DataFrame:
    """Submission-format probabilities, fold ``k``'s rows calibrated with parameters fitted on
    the other folds' labelled, predicted rows of the same family."""
    priors = _row_priors(frame, train)
    probs = softmax(frame[list(LOGIT_COLUMNS)].to_numpy(np.float64))
    for family in FAMILIES:
        for fold in frame.fold.unique():
            same = (frame.family == family) & (frame.predicted == 1)
            fit = (same & (frame.fold != fold) & (frame.label >= 0)).to_numpy()
            apply = (same & (frame.fold == fold)).to_numpy()
            if not fit.any() or not apply.any():
                continue
            result = minimize(lambda th: _loss(form, th, frame[fit], priors[fit], family),
                              START[form], method="Nelder-Mead",
                              options={"xatol": 1e-3, "fatol": 1e-7, "maxiter": 2000})
            probs[apply] = calibrated(form, result.x, frame[apply][list(LOGIT_COLUMNS)]
                                      .to_numpy(np.float64), priors[apply])  # fmt: skip
    out = pd.DataFrame(probs, columns=list(PROBABILITY_COLUMNS))
    out.insert(0, "row_id", frame.row_id.to_numpy())
    return out.sort_values("row_id").reset_index(drop=True)


def compare(work: Path) -> dict:
    """Each form's score and terms, for every member and for the members' mean."""
    summary = json.loads((work / "summary.json").read_text())
    train = read_train(Path(summary["data"]) / "train.csv")
    folds = read_folds(work / "folds.csv")
    weights = Path(summary["weights"])
    out: dict = {}
    for form in ("temperature", "temperature_bias", "temperature_prior_mix"):
        members = {}
        for name in summary["members"]:
            if form == "temperature":
                members[name] = pd.read_csv(weights / name / "oof_calibrated.csv")
                continue
            frame = pd.read_csv(weights / name / "oof_logits_on_crops.csv")
            frame = frame[frame.study_id.isin(set(folds.study_id))].reset_index(drop=True)
            members[name] = cross_fitted(frame, train, form)
        mean = pd.concat(members.values()).groupby("row_id", sort=True)[
            list(PROBABILITY_COLUMNS)].mean().reset_index()
        scored = {n: score_submission(train, s, subset=True).score for n, s in members.items()}
        result = score_submission(train, mean, subset=True)
        out[form] = {"mean": {t: round(float(getattr(result, t)), 4) for t in TERMS},
                     "members": {n: round(float(s), 4) for n, s in scored.items()}}
    return out


if __name__ == "__main__":
    work, target, command = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    result = {"command": command, "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
              "work": str(work), "forms": compare(work)}
    write_text(target, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
