"""``python -m bench.member_mixes OUT DATA FOLDS_CSV COMMAND ABLATION_DIR A+B [C+D ...]``: what a
second ensemble member adds, from the out-of-fold files of one ``rsna-lumbar ablate`` run.

Each pair ``A+B`` names two variant folders of ``ABLATION_DIR``; their calibrated out-of-fold
probabilities (``oof_calibrated.csv``: graded at the localiser's points when the ablation had
``--localised-crops``, as inference sees them) are mixed three ways:

- ``mean``: the plain mean, as the ensemble predicts without fitted weights;
- ``member_weights``: one weight per member, :func:`~rsna_lumbar.training.ensemble_weights.
  choose_weights` (cross-fitted over the folds against the mean);
- ``family_weights``: one weight per member *and family* (spinal, foraminal, subarticular), each
  family's weight of ``B`` the best of 0, 0.1, …, 1 on the other folds' rows, applied to the held
  fold (cross-fitted). The metric's terms are separable by family (``any_severe_spinal`` reads
  the spinal rows only), so each family's weight is chosen by the score with the others at 0.5.

Every member and mix is scored on all rows and fold by fold; ``paired`` gives each mean mix's
fold-by-fold difference from the first pair's mean mix (mean, standard error over the folds: the
same studies on both sides), so ``baseline+baseline_seed43`` first asks whether another model
adds more than another seed of the same one. ``DATA`` is the competition folder (``train.csv``;
``truth/bayes_train.csv`` for the Bayes floor). Written with ``command``, ``commit`` and ``date``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.__main__ import _commit
from rsna_lumbar.atomic import write_text
from rsna_lumbar.folds import read_folds
from rsna_lumbar.metric import GROUPS, score_frames
from rsna_lumbar.tables import labels_long, read_sample_submission, read_train
from rsna_lumbar.training.ensemble_weights import choose_weights
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, parse_row_id

COLUMNS = list(PROBABILITY_COLUMNS)
FAMILIES = [f.value for f in GROUPS]  # the metric's terms, in its order
GRID = np.round(np.linspace(0.0, 1.0, 11), 2)


def _member(folder: Path) -> pd.DataFrame:
    """A variant's calibrated OOF probabilities indexed by ``row_id`` (sorted)."""
    return pd.read_csv(folder / "oof_calibrated.csv").set_index("row_id").sort_index()[COLUMNS]


def _mix(a: pd.DataFrame, b: pd.DataFrame, weight_b: np.ndarray) -> pd.DataFrame:
    """``(1 − w)·a + w·b`` row by row (``weight_b``: one weight per row), as a submission frame."""
    w = weight_b[:, None]
    return pd.DataFrame((1 - w) * a.to_numpy() + w * b.to_numpy(), index=a.index,
                        columns=COLUMNS).rename_axis("row_id").reset_index()  # fmt: skip


def _scores(labels: pd.DataFrame, frame: pd.DataFrame, fold_of_row: np.ndarray) -> dict:
    """The score and its terms on every row, and the score of each fold's rows."""
    whole = score_frames(labels, frame, subset=True).as_dict()
    out = {k: round(float(whole[k]), 4) for k in ("score", *FAMILIES, "any_severe_spinal")}
    out["per_fold"] = [round(score_frames(labels, frame[fold_of_row == k], subset=True).score, 4)
                       for k in np.unique(fold_of_row)]  # fmt: skip
    return out


def family_weights(labels: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame,
                   family_of_row: np.ndarray, fold_of_row: np.ndarray) -> dict:
    """Cross-fitted per-family weights of ``b`` (module docstring): the weights chosen on all
    rows, each fold's weights, and the cross-fitted score."""

    def best(rows: np.ndarray) -> dict[str, float]:
        chosen = {}
        for family in FAMILIES:
            losses = []
            for g in GRID:
                w = np.where(family_of_row == family, g, 0.5)[rows]
                losses.append(score_frames(labels, _mix(a[rows], b[rows], w), subset=True).score)
            chosen[family] = float(GRID[int(np.argmin(losses))])
        return chosen

    def weights_of(chosen: dict[str, float]) -> np.ndarray:
        return np.array([chosen[f] for f in family_of_row])

    parts, per_fold = [], []
    for k in np.unique(fold_of_row):
        chosen = best(fold_of_row != k)
        per_fold.append(chosen)
        held = fold_of_row == k
        parts.append(_mix(a[held], b[held], weights_of(chosen)[held]))
    crossed = score_frames(labels, pd.concat(parts), subset=True).score
    return {"weights": best(np.ones(len(a), bool)), "per_fold": per_fold,
            "cross_fitted_score": round(float(crossed), 4)}


def member_mixes(ablation: Path, data: Path, folds_csv: Path, pairs: list[str]) -> dict:
    """``{"bayes_floor", "members", "mixes", "paired"}`` (module docstring)."""
    train = read_train(data / "train.csv")
    labels = labels_long(train)
    folds = read_folds(folds_csv)
    floor = score_frames(labels, read_sample_submission(data / "truth" / "bayes_train.csv"))
    names = sorted({n for pair in pairs for n in pair.split("+")})
    members = {n: _member(ablation / n) for n in names}
    index = members[names[0]].index
    if any(not m.index.equals(index) for m in members.values()):
        raise ValueError("the variants' out-of-fold rows differ: mix only runs of the same studies")
    parsed = [parse_row_id(r) for r in index]
    studies = np.array([study for study, _, _ in parsed])
    fold_of_row = pd.Series(studies).map(folds.set_index("study_id").fold).to_numpy()
    if np.isnan(fold_of_row.astype(float)).any():
        raise ValueError(f"studies of the out-of-fold files are missing from {folds_csv}: "
                         "pass the folds file the ablation trained with")
    family_of_row = np.array([condition.family.value for _, condition, _ in parsed])
    out: dict = {"bayes_floor": round(floor.score, 4),
                 "members": {n: _scores(labels, m.rename_axis("row_id").reset_index(), fold_of_row)
                             for n, m in members.items()},
                 "mixes": {}, "paired": {}}  # fmt: skip
    for pair in pairs:
        a_name, b_name = pair.split("+")
        a, b = members[a_name], members[b_name]
        frames = [m.rename_axis("row_id").reset_index() for m in (a, b)]
        out["mixes"][pair] = {
            "mean": _scores(labels, _mix(a, b, np.full(len(a), 0.5)), fold_of_row),
            "member_weights": choose_weights(frames, train, folds),
            "family_weights": family_weights(labels, a, b, family_of_row, fold_of_row)}
    reference = pairs[0]
    for pair in pairs[1:]:
        diff = (np.subtract(out["mixes"][pair]["mean"]["per_fold"],
                            out["mixes"][reference]["mean"]["per_fold"]))  # fmt: skip
        out["paired"][f"{pair} − {reference}"] = {
            "mean": round(float(diff.mean()), 4),
            "se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
            "folds": [round(float(d), 4) for d in diff]}
    return out


def main() -> None:
    target, data, folds_csv, command, ablation = (Path(sys.argv[1]), Path(sys.argv[2]),
                                                  Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5]))
    result = {"command": command, "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
              "points": "the ablation's oof_calibrated.csv (the localiser's points with --localised-crops)",
              **member_mixes(ablation, data, folds_csv, sys.argv[6:])}
    write_text(target, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
