"""``rsna-lumbar score``: the official metric on a submission."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "score a submission with the official competition metric"
DESCRIPTION = """\
Score SUB_CSV against the labels of TRAIN_CSV exactly as Kaggle does: weighted log loss
(weights 1/2/4 for Normal/Mild, Moderate, Severe) for the spinal, foraminal and subarticular
groups, plus the any_severe_spinal term, averaged. Rows are matched by row_id; rows whose
label is missing in TRAIN_CSV (or whose study it lacks) are not scored.

example:
  rsna-lumbar score --labels data/train.csv --submission oof.csv --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", type=Path, required=True, metavar="TRAIN_CSV",
                        help="the competition's train.csv (or a file of the same schema)")
    parser.add_argument("--submission", type=Path, required=True, metavar="SUB_CSV",
                        help="row_id,normal_mild,moderate,severe")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.metric import score_submission
    from rsna_lumbar.tables import read_sample_submission, read_train

    result = score_submission(read_train(args.labels), read_sample_submission(args.submission))
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(f"{'term':<20}{'loss':>10}")
    for name in ("spinal", "foraminal", "subarticular", "any_severe_spinal", "score"):
        print(f"{name:<20}{getattr(result, name):>10.4f}")
    print(f"({result.rows_scored} rows of {result.studies_scored} studies scored)")
    return 0
