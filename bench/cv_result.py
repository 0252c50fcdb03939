"""``python -m bench.cv_result SUMMARY OUT COMMAND``: a ``run`` summary (``WORK/summary.json``)
→ the result file of a cross-validation (``docs/results/cv200.json``), with the keys
``shared/DESIGN.md`` ("Result files") lists: ``recipe``, ``studies``, ``folds``, ``score``,
``bayes_floor``, ``prior``, ``terms``, ``balanced_accuracy`` and ``moderate_recall`` (family →
value), plus ``command``, ``commit`` and ``date``.

``score`` and ``terms`` are the ensemble's out of fold on crops at the labelled points (what the
severity models can do); ``localised_points`` holds the same at the localiser's points, and
``ratio_to_floor`` the score over the Bayes floor.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.__main__ import _commit
from rsna_lumbar.atomic import write_text

TERMS = ("spinal", "foraminal", "subarticular", "any_severe_spinal")


def cv_result(summary: dict, command: str, commit: str | None) -> dict:
    """The result file's content from a ``run`` summary (module docstring)."""
    import pandas as pd

    labelled = summary["oof"]["labelled_points"]
    localised = summary["oof"]["localised_points"]
    member = next(iter(summary["members"].values()))  # the first member (cv200 has one)
    folds = pd.read_csv(Path(summary["work"]) / "folds.csv").fold.nunique()
    return {
        "command": command, "commit": commit, "date": time.strftime("%Y-%m-%d"),
        "recipe": summary["recipe"], "studies": labelled["studies_scored"],
        "folds": int(folds),
        "score": round(labelled["score"], 4),
        "bayes_floor": round(summary["bayes_floor"]["score"], 4),
        "prior": round(summary["prior"]["score"], 4),
        "ratio_to_floor": round(labelled["score"] / summary["bayes_floor"]["score"], 3),
        "terms": {t: round(labelled[t], 4) for t in TERMS},
        "balanced_accuracy": member["labelled_points"]["balanced_accuracy"],
        "moderate_recall": member["labelled_points"]["moderate_recall"],
        "localised_points": {"score": round(localised["score"], 4),
                             "terms": {t: round(localised[t], 4) for t in TERMS},
                             "balanced_accuracy": member["localised_points"]["balanced_accuracy"],
                             "moderate_recall": member["localised_points"]["moderate_recall"]},
        "bayes_floor_terms": {t: round(summary["bayes_floor"][t], 4) for t in TERMS},
        "minutes": summary.get("minutes"), "stages": summary.get("stages"),
    }


if __name__ == "__main__":
    source, out, command = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    result = cv_result(json.loads(source.read_text()), command, _commit())
    write_text(out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
