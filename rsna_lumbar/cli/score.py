"""``rsna-lumbar score``: the official metric on a submission."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "score a submission with the official competition metric"
DESCRIPTION = """\
Score SUB_CSV against the labels of TRAIN_CSV exactly as Kaggle does (scikit-learn 1.2.2's
log_loss): for the spinal, foraminal and subarticular groups, each submitted row is clipped to
[eps, 1 - eps] (float64 eps) and divided by its sum, and the loss is the weighted mean of
-log p(true grade), weights 1/2/4 for Normal/Mild, Moderate, Severe. The any_severe_spinal term
takes, per study, the largest RAW submitted severe value over its spinal rows, clipped to
[eps, 1 - eps]; label: any spinal level Severe; weight: the study's largest row weight. The
score is the mean of the four. Rows are matched by row_id; rows whose label is missing in
TRAIN_CSV (or whose study it lacks) are not scored, and counted. Rows need not sum to 1;
non-numeric, non-finite or negative values and duplicated row_ids are refused.

A submission that lacks labelled rows of TRAIN_CSV's studies is refused (exit code 2) with an
error that counts them; --subset scores only the studies SUB_CSV holds (an out-of-fold file),
still refusing rows missing inside those studies.

example:
  rsna-lumbar score --labels data/train.csv --submission oof.csv --subset --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", type=Path, required=True, metavar="TRAIN_CSV",
                        help="the competition's train.csv (or a file of the same schema)")
    parser.add_argument("--submission", type=Path, required=True, metavar="SUB_CSV",
                        help="row_id,normal_mild,moderate,severe")
    parser.add_argument("--subset", action="store_true",
                        help="score only the studies SUB_CSV holds, e.g. an out-of-fold file")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.metric import IncompleteSubmissionError, score_submission
    from rsna_lumbar.tables import read_sample_submission, read_train

    train, submission = read_train(args.labels), read_sample_submission(args.submission)
    try:
        result = score_submission(train, submission, subset=args.subset)
    except IncompleteSubmissionError as error:
        # Like the CLI's other expected failures (one line, no traceback), but exit code 2.
        if getattr(args, "verbose", False):
            raise
        print(f"rsna-lumbar score: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(f"{'term':<20}{'loss':>10}")
    for name in ("spinal", "foraminal", "subarticular", "any_severe_spinal", "score"):
        print(f"{name:<20}{getattr(result, name):>10.4f}")
    print(f"({result.rows_scored} rows of {result.studies_scored} studies scored; "
          f"{result.rows_unscored} submission rows without a label not scored)")
    if result.subset:
        print(f"subset: {result.studies_scored} of {result.studies_labelled} labelled studies")
    return 0
