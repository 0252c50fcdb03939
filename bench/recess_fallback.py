"""``python -m bench.recess_fallback CROPS LABELS OUT COMMAND MODEL...``: how well each model
folder grades the lateral recesses of a level that no axial slice covers, out of fold.

About a fifth of real studies have axial stacks that miss a level (``docs/competition.md``);
the synthetic generator leaves those recesses unlabelled, so the CV never scores them. This
benchmark makes the case on labelled recesses instead: it copies the crop cache ``CROPS``
without any axial crop (the canal's axial view goes too, as it does when no axial slice covers
the level) and predicts every study with the fold model that did not train on it
(:func:`rsna_lumbar.training.held_out.held_out_logits`), on the cache as it is and on the copy.
On the labelled subarticular rows whose axial crop is in ``CROPS`` it reports, per model folder,
the subarticular term of the metric and the balanced accuracy both ways, with each folder's
calibration (``calibration.json``) as ``predict`` applies it. A per-family folder falls back to
its training folds' priors without the axial crops; a level-context folder
(``model.level_context``) grades the recess from its level's sagittal crops.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from bench.__main__ import _commit
from rsna_lumbar.atomic import write_text
from rsna_lumbar.metric import weighted_log_loss
from rsna_lumbar.models.folder import CALIBRATION_FILE, load_temperatures
from rsna_lumbar.tables import read_train
from rsna_lumbar.training.held_out import held_out_logits
from rsna_lumbar.training.oof import probabilities


def without_axial(crops: Path, dest: Path) -> tuple[Path, set[str]]:
    """A copy of the crop cache ``crops`` at ``dest`` without any axial crop, and the row ids
    (``{study}_{condition}_{level}``) of the recesses that had one."""
    shutil.copytree(crops, dest, ignore=shutil.ignore_patterns("*.npz", "*.png"))
    had_axial = set()
    for npz_path in crops.glob("*.npz"):
        with np.load(npz_path) as npz:
            kept = {k: npz[k] for k in npz.files if not k.endswith("/axial")}
            had_axial |= {f"{npz_path.stem}_{k.split('/')[0]}_{k.split('/')[1]}" for k in npz.files
                          if k.endswith("/axial") and "_subarticular_stenosis/" in k}  # fmt: skip
        np.savez(dest / npz_path.name, **kept)
    return dest, had_axial


def _graded(frame: pd.DataFrame, model: Path) -> tuple[np.ndarray, pd.DataFrame]:
    frame = frame.sort_values("row_id", kind="stable").reset_index(drop=True)
    return probabilities(frame, load_temperatures(model / CALIBRATION_FILE)), frame


def compare(crops: Path, labels: Path, models: list[Path]) -> dict:
    """Per model folder: the subarticular term and balanced accuracy with and without the
    recesses' axial crops, on the labelled recesses that had one (module docstring)."""
    train = read_train(labels)
    results, rows = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        stripped, had_axial = without_axial(Path(crops), Path(tmp) / "crops")
        for model in models:
            with_probs, with_frame = _graded(held_out_logits(model, crops, train), model)
            without_probs, without_frame = _graded(held_out_logits(model, stripped, train), model)
            assert (with_frame.row_id == without_frame.row_id).all()
            keep = (with_frame.row_id.isin(had_axial) & (with_frame.label >= 0)).to_numpy()
            rows = int(keep.sum())
            y = with_frame.label.to_numpy()[keep]
            results[model.name] = {
                "with_axial": {"subarticular": round(weighted_log_loss(y, with_probs[keep]), 4),
                               "balanced_accuracy": round(balanced_accuracy_score(y, with_probs[keep].argmax(1)), 4)},
                "without_axial": {"subarticular": round(weighted_log_loss(y, without_probs[keep]), 4),
                                  "balanced_accuracy": round(balanced_accuracy_score(y, without_probs[keep].argmax(1)), 4),
                                  "graded_share": round(float(without_frame.predicted.to_numpy()[keep].mean()), 4)},
            }  # fmt: skip
    return {"rows": rows, "models": results}


def main() -> None:
    crops, labels, target, command = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    models = [Path(p) for p in sys.argv[5:]]
    result = {"command": command, "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
              "crops": str(crops), **compare(crops, labels, models)}
    write_text(target, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
