"""``python -m bench.ablation_result OUT DATA COMMAND NAME=ABLATION_DIR...``: the result file of
one or more ``rsna-lumbar ablate`` runs on synthetic data (e.g. two seeds of the same variants).

Each ``ABLATION_DIR`` holds ``comparison.csv`` (one row per variant: the official out-of-fold
score and its terms, balanced accuracy and Moderate recall per family, parameters, training
seconds; the ``*_localised`` columns graded at the localiser's points). ``DATA`` is the
competition folder ``rsna-lumbar synth`` wrote, whose ``truth/bayes_train.csv`` gives the Bayes
floor on the same labels; each row gets ``ratio_to_floor`` (labelled points) and
``ratio_to_floor_localised``. Written with ``command``, ``commit`` and ``date``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from bench.__main__ import _commit
from rsna_lumbar.atomic import write_text
from rsna_lumbar.metric import score_submission
from rsna_lumbar.tables import read_sample_submission, read_train


def ablation_tables(data: Path, runs: dict[str, Path]) -> dict:
    """``{"bayes_floor": {...}, "runs": {name: [row, ...]}}`` (module docstring)."""
    floor = score_submission(read_train(data / "train.csv"),
                             read_sample_submission(data / "truth" / "bayes_train.csv")).as_dict()
    tables = {}
    for name, folder in runs.items():
        table = pd.read_csv(Path(folder) / "comparison.csv")
        table["ratio_to_floor"] = (table["score"] / floor["score"]).round(3)
        if "score_localised" in table:
            table["ratio_to_floor_localised"] = (table["score_localised"] / floor["score"]).round(3)
        tables[name] = json.loads(table.to_json(orient="records", double_precision=4))
    return {"bayes_floor": {k: round(v, 4) for k, v in floor.items()}, "runs": tables}


def main() -> None:
    target, data, command = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    runs = dict(arg.split("=", 1) for arg in sys.argv[4:])
    result = {"command": command, "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
              **ablation_tables(data, {k: Path(v) for k, v in runs.items()})}
    write_text(target, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
