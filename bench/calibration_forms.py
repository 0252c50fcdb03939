"""``python -m bench.calibration_forms WORK OUT COMMAND``: is a richer calibration than one
temperature per family worth it, out of fold at the localiser's points?

Reads a finished ``rsna-lumbar run`` (``WORK/summary.json``, its ``data/train.csv``,
``folds.csv`` and each member's ``oof_logits_on_crops.csv`` — the logits at the localiser's
points, since the run grades those last) and scores the members' mean three ways, each
calibration fitted per family on the other folds only (cross-fitted, as ``report`` does):

* ``temperature`` — what the kit ships (``oof_calibrated.csv``: ``T_f``, kept only where the
  cross-fit helped); the other two are held to its temperature bounds and fall back to the raw
  logits the same way;
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
from rsna_lumbar.metric import score_submission
from rsna_lumbar.models.forward import softmax
from rsna_lumbar.priors import class_priors
from rsna_lumbar.tables import read_train
from rsna_lumbar.training.calibration import BOUNDS, family_terms
from rsna_lumbar.training.oof import LOGIT_COLUMNS
from rsna_lumbar.training.report import TERMS
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, TARGET_COLUMNS, Family

FAMILIES = tuple(f.value for f in Family)
START = {"temperature_bias": [0.0, 0.0, 0.0], "temperature_prior_mix": [0.0, -3.0]}


def calibrated(form: str, theta: np.ndarray, logits: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """``(N, 3)`` probabilities of ``logits`` ``(N, 3)`` under ``form`` with parameters ``theta``
    (``theta[0]``: the log temperature, held to the shipped calibration's bounds); ``priors``
    ``(N, 3)`` or ``(3,)``: the class prior of each row."""
    scaled = logits / np.exp(np.clip(theta[0], *BOUNDS))
    if form == "temperature_bias":
        return softmax(scaled + np.array([0.0, theta[1], theta[2]]))
    weight = 1.0 / (1.0 + np.exp(-theta[1]))
    return (1.0 - weight) * softmax(scaled) + weight * priors


def fit(form: str, rows: pd.DataFrame, priors: np.ndarray, family: str) -> np.ndarray:
    """Parameters of ``form`` minimising the family's metric terms on ``rows``."""
    logits = rows[list(LOGIT_COLUMNS)].to_numpy(np.float64)
    result = minimize(lambda th: family_terms(rows, calibrated(form, th, logits, priors), family),
                      START[form], method="Nelder-Mead",
                      options={"xatol": 1e-3, "fatol": 1e-7, "maxiter": 2000})
    return result.x


def _target_priors(frame: pd.DataFrame, train: pd.DataFrame, fold) -> np.ndarray:
    """``(N, 3)``: each row's target prior from the studies outside ``fold`` (held out)."""
    target = frame.row_id.str.split("_", n=1).str[1].map(
        {c: i for i, c in enumerate(TARGET_COLUMNS)}).to_numpy()
    others = set(frame.study_id[frame.fold != fold])
    return class_priors(train[train.study_id.isin(others)])[target]


def cross_fitted(frame: pd.DataFrame, train: pd.DataFrame, form: str) -> pd.DataFrame:
    """Submission-format probabilities: fold ``k``'s rows calibrated with parameters fitted on
    the other folds' labelled, predicted rows of the same family (the priors from those folds
    too). As the shipped temperature, a family keeps its raw logits where the cross-fitted
    form did not lower its terms out of fold."""
    raw = softmax(frame[list(LOGIT_COLUMNS)].to_numpy(np.float64))
    probs = raw.copy()
    for fold in frame.fold.unique():
        priors = _target_priors(frame, train, fold)
        for family in FAMILIES:
            same = (frame.family == family) & (frame.predicted == 1)
            fitted = (same & (frame.fold != fold) & (frame.label >= 0)).to_numpy()
            apply = (same & (frame.fold == fold)).to_numpy()
            if fitted.any() and apply.any():
                theta = fit(form, frame[fitted], priors[fitted], family)
                probs[apply] = calibrated(form, theta, frame[apply][list(LOGIT_COLUMNS)]
                                          .to_numpy(np.float64), priors[apply])  # fmt: skip
    for family in FAMILIES:
        rows = ((frame.family == family) & (frame.predicted == 1) & (frame.label >= 0)).to_numpy()
        kept = frame[rows]
        if rows.any() and (family_terms(kept, probs[rows], family)
                           >= family_terms(kept, raw[rows], family)):
            family_rows = (frame.family == family).to_numpy()
            probs[family_rows] = raw[family_rows]
    out = pd.DataFrame(probs, columns=list(PROBABILITY_COLUMNS))
    out.insert(0, "row_id", frame.row_id.to_numpy())
    return out.sort_values("row_id").reset_index(drop=True)


def compare(work: Path) -> dict:
    """Each form's score and terms, for every member and for the members' mean, on the
    studies of the run's folds."""
    summary = json.loads((work / "summary.json").read_text())
    train = read_train(Path(summary["data"]) / "train.csv")
    studies = set(read_folds(work / "folds.csv").study_id)
    weights = Path(summary["weights"])
    out: dict = {}
    for form in ("temperature", "temperature_bias", "temperature_prior_mix"):
        members = {}
        for name in summary["members"]:
            if form == "temperature":
                shipped = pd.read_csv(weights / name / "oof_calibrated.csv")
                members[name] = shipped[shipped.row_id.str.split("_").str[0].astype(int)
                                        .isin(studies)].reset_index(drop=True)  # fmt: skip
                continue
            frame = pd.read_csv(weights / name / "oof_logits_on_crops.csv")
            frame = frame[frame.study_id.isin(studies)].reset_index(drop=True)
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
