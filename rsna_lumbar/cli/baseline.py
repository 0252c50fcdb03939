"""``rsna-lumbar baseline``: the class-prior submission, the floor every model must beat."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write the class-prior baseline submission for a split"
DESCRIPTION = """\
Predict, for every study of the split, each target's grade counts in train.csv (one pseudo-count
per grade) weighted by the metric's 1/2/4: the constant that minimises the weighted log loss.
(--unweighted gives plain frequencies, which on the real class balance score worse than
uniform.) Writes a valid submission and, with --priors-out, the priors JSON that 'predict' uses
as its fallback.

example:
  rsna-lumbar baseline --data DIR --split test --out prior.csv --priors-out weights/priors.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="competition folder")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--out", type=Path, required=True, metavar="SUB_CSV")
    parser.add_argument("--labels", type=Path, metavar="TRAIN_CSV",
                        help="labels to count (default: DIR/train.csv)")
    parser.add_argument("--unweighted", action="store_true",
                        help="plain grade frequencies instead of metric-weighted ones")
    parser.add_argument("--priors-out", type=Path, metavar="JSON",
                        help="also save the priors as JSON (e.g. weights/priors.json)")


def run(args: argparse.Namespace) -> int:
    import logging

    from rsna_lumbar.layout import CompetitionFolder
    from rsna_lumbar.priors import class_priors, prior_submission, save_priors
    from rsna_lumbar.submission import write_submission
    from rsna_lumbar.tables import read_train, split_study_ids

    labels = args.labels or CompetitionFolder(args.data).train_csv
    priors = class_priors(read_train(labels), weighted=not args.unweighted)
    study_ids = split_study_ids(args.data, args.split)
    write_submission(prior_submission(priors, study_ids), args.out, study_ids)
    if args.priors_out:
        save_priors(priors, args.priors_out)
    logging.getLogger(__name__).info(
        "prior baseline: %d studies → %s", len(study_ids), args.out
    )
    return 0
