"""``rsna-lumbar folds``: study-level stratified k-fold assignment, written once."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "assign studies to stratified cross-validation folds"
DESCRIPTION = """\
Split the studies of TRAIN_CSV into K folds, stratified on a study-level severity summary
(worst spinal grade × number of other Severe labels), reproducibly from SEED. Training, the
out-of-fold predictions and the report all read the same file.

example:
  rsna-lumbar folds --labels DIR/train.csv --out work/folds.csv --k 5 --seed 42
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", type=Path, required=True, metavar="TRAIN_CSV")
    parser.add_argument("--out", type=Path, required=True, metavar="CSV")
    parser.add_argument("--k", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, default=42, help="shuffle seed (default 42)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing folds file")


def run(args: argparse.Namespace) -> int:
    import logging

    from rsna_lumbar.folds import make_folds, write_folds
    from rsna_lumbar.tables import read_train

    log = logging.getLogger(__name__)
    if args.out.exists() and not args.force:
        log.info("%s exists; keeping it (use --force to recompute)", args.out)
        return 0
    folds = make_folds(read_train(args.labels), k=args.k, seed=args.seed)
    write_folds(folds, args.out)
    sizes = folds["fold"].value_counts().sort_index().tolist()
    log.info("wrote %d studies in %d folds (sizes %s) to %s", len(folds), args.k, sizes, args.out)
    return 0
