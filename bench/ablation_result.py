"""``python -m bench.ablation_result OUT DATA COMMAND NAME=ABLATION_DIR... [--keep EARLIER.json]``:
the result file of one or more ``rsna-lumbar ablate`` runs on synthetic data (e.g. two seeds of
the same variants).

Each ``ABLATION_DIR`` holds ``comparison.csv`` (one row per variant: the official out-of-fold
score and its terms, balanced accuracy and Moderate recall per family, parameters, training
seconds; the ``*_localised`` columns graded at the localiser's points). ``DATA`` is the
competition folder ``rsna-lumbar synth`` wrote, whose ``truth/bayes_train.csv`` gives the Bayes
floor on the same labels; each row gets ``ratio_to_floor`` (labelled points) and
``ratio_to_floor_localised``. To tell a difference from noise, ``per_fold`` scores every variant
fold by fold on its uncalibrated out-of-fold logits (``oof_logits.csv``, and
``oof_logits_on_crops.csv`` at the localiser's points), and ``paired`` gives each variant's
difference from ``baseline`` fold by fold: the mean and its standard error over the folds (the
same studies on both sides). A variant trained on another seed is named ``NAME_seedS``; where
``baseline_seedS`` ran too, ``paired_same_seed`` gives the variant's difference from it, so a
capability is read seed against seed. Where several runs hold a ``baseline`` (the same variant
run again, e.g. at another commit or thread count, which changes the training's floating-point
path), ``paired_baselines_mean`` gives every other variant's difference from their fold-by-fold
mean, which one run's bad fold moves less. Written with ``command``, ``commit`` and ``date``.

``--keep EARLIER.json`` adds the variants of an earlier result file of the same draw whose
folders are gone (an ablation's folders are large; a later ``--only`` run overwrites
``comparison.csv``): their rows and fold scores are kept as stored, a variant run again is taken
from its folder, and ``paired`` is computed on the merged fold scores; a run not named again is
kept whole (e.g. beside a rerun of the baseline and new variants under a new run name, paired
with their own baseline). The earlier file must have the same Bayes floor (the same labels),
else it is refused.
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
from rsna_lumbar.metric import score_submission
from rsna_lumbar.tables import read_sample_submission, read_train
from rsna_lumbar.training.oof import submission_from_logits

LOGIT_FILES = {"labelled": "oof_logits.csv", "localised": "oof_logits_on_crops.csv"}


def fold_scores(folder: Path, train: pd.DataFrame) -> dict[str, list[float]]:
    """``{points: [score of fold 0, 1, …]}`` of a variant folder's uncalibrated OOF logits."""
    out = {}
    for points, name in LOGIT_FILES.items():
        if not (folder / name).is_file():
            continue
        frame = pd.read_csv(folder / name)
        out[points] = [
            round(score_submission(train[train.study_id.isin(rows.study_id)],
                                   submission_from_logits(rows), subset=True).score, 4)
            for _, rows in sorted(frame.groupby("fold"))]  # fmt: skip
    return out


def paired(scores: dict[str, list[float]], baseline: dict[str, list[float]]) -> dict:
    """Fold-by-fold differences from the baseline: ``{points: {mean, se, folds}}``."""
    out = {}
    for points, values in scores.items():
        if points in baseline:
            diff = np.subtract(values, baseline[points])
            out[points] = {"mean": round(float(diff.mean()), 4),
                           "se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
                           "folds": [round(float(d), 4) for d in diff]}
    return out


def same_seed_baseline(variant: str) -> str | None:
    """``baseline_seedS`` for a variant ``NAME_seedS`` (``NAME`` not ``baseline``), else None.

    The split is at the last ``_seed``; a variant of a seed with no ``baseline_seedS`` in the run
    (e.g. ``ema_seed42`` beside a ``baseline`` of seed 42) is left unpaired by the caller.
    """
    name, _, seed = variant.rpartition("_seed")
    return f"baseline_seed{seed}" if name and name != "baseline" and seed.isdigit() else None


def ablation_tables(data: Path, runs: dict[str, Path], keep: dict | None = None) -> dict:
    """``{"bayes_floor": {...}, "runs": {name: [row, ...]}, "per_fold", "paired", …}``.

    ``keep``: an earlier result file whose variants missing from ``runs`` are kept (module
    docstring).
    """
    train = read_train(data / "train.csv")
    floor = score_submission(train, read_sample_submission(data / "truth" / "bayes_train.csv")).as_dict()
    tables, folds = {}, {}
    for name, folder in runs.items():
        table = pd.read_csv(Path(folder) / "comparison.csv")
        table["ratio_to_floor"] = (table["score"] / floor["score"]).round(3)
        if "score_localised" in table:
            table["ratio_to_floor_localised"] = (table["score_localised"] / floor["score"]).round(3)
        tables[name] = json.loads(table.to_json(orient="records", double_precision=4))
        folds[name] = {v: fold_scores(Path(folder) / v, train) for v in table.variant
                       if (Path(folder) / v).is_dir()}  # fmt: skip
    result = {"bayes_floor": {k: round(v, 4) for k, v in floor.items()}, "runs": tables,
              "per_fold": folds}
    if keep is not None:
        result = kept_variants(keep, result)
    return {**result, **differences(result["per_fold"])}


def kept_variants(earlier: dict, fresh: dict) -> dict:
    """``fresh`` with the variants of ``earlier`` (a result file) that ``fresh`` lacks.

    Rows and fold scores of those variants are copied as stored, earlier rows first; a variant in
    both is taken from ``fresh``. A run only ``earlier`` has is kept whole, one only ``fresh`` has
    is new. Raises ValueError when the Bayes floors differ (other labels).
    """
    if earlier["bayes_floor"] != fresh["bayes_floor"]:
        raise ValueError(f"the earlier result file's Bayes floor {earlier['bayes_floor']['score']} "
                         f"is not this data's {fresh['bayes_floor']['score']}: it holds another "
                         "draw's labels")
    runs = {name: rows for name, rows in earlier["runs"].items() if name not in fresh["runs"]}
    folds = {name: earlier["per_fold"].get(name, {}) for name in runs}
    for name, rows in fresh["runs"].items():
        if name not in earlier["runs"]:
            print(f"ablation_result: run {name!r} is new (the earlier file's runs: "
                  f"{sorted(earlier['runs'])})", file=sys.stderr)
            runs[name], folds[name] = rows, fresh["per_fold"][name]
            continue
        ran = {row["variant"] for row in rows}
        runs[name] = [row for row in earlier["runs"][name] if row["variant"] not in ran] + rows
        kept = {v: s for v, s in earlier["per_fold"].get(name, {}).items() if v not in ran}
        folds[name] = {**kept, **fresh["per_fold"][name]}
    return {**fresh, "runs": runs, "per_fold": folds}


def differences(per_fold: dict[str, dict]) -> dict:
    """``{"paired": …, "paired_same_seed": …, "paired_baselines_mean": …}`` of each run's fold
    scores (module docstring)."""
    against_baseline, same_seed = {}, {}
    for name, folds in per_fold.items():
        if "baseline" in folds:
            against_baseline[name] = {v: paired(s, folds["baseline"])
                                      for v, s in folds.items() if v != "baseline"}  # fmt: skip
        same_seed[name] = {v: {"against": base, **paired(s, folds[base])}
                           for v, s in folds.items()
                           if (base := same_seed_baseline(v)) in folds}  # fmt: skip
    result = {"paired": against_baseline, "paired_same_seed": same_seed}
    baselines = [folds["baseline"] for folds in per_fold.values() if "baseline" in folds]
    if len(baselines) > 1:  # runs of the same baseline: their fold-by-fold mean is steadier
        mean = {points: np.mean([b[points] for b in baselines if points in b], axis=0).round(4).tolist()
                for points in baselines[0]}  # fmt: skip
        result["paired_baselines_mean"] = {
            name: {v: paired(s, mean) for v, s in folds.items() if v != "baseline"}
            for name, folds in per_fold.items()}
    return result


def main() -> None:
    args = sys.argv[1:]
    keep = None
    if "--keep" in args:
        at = args.index("--keep")
        keep = json.loads(Path(args[at + 1]).read_text())
        del args[at:at + 2]
    target, data, command = Path(args[0]), Path(args[1]), args[2]
    runs = dict(arg.split("=", 1) for arg in args[3:])
    result = {"command": command, "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
              **ablation_tables(data, {k: Path(v) for k, v in runs.items()}, keep)}
    write_text(target, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
