"""``rsna-lumbar demo``: ``run --recipe demo`` on the bundled synthetic data."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "the main job on synthetic data: 'run --recipe demo' (synth → … → submission.csv)"
DESCRIPTION = """\
Exactly 'rsna-lumbar run --recipe demo': generate a synthetic competition folder (train and
test splits) in WORK/data, index it, split folds, place the points with the packaged localiser, cut
crops at the labelled and at the localised points, train the severity models k-fold, report the
out-of-fold metric on both beside the prior baseline and the Bayes floor, predict the test
split, validate the submission and score it against the synthetic truth. Stages resume.
WEIGHTS is left ready for 'rsna-lumbar predict'. KEY=VALUE overrides the recipe
('rsna-lumbar recipes show demo').

examples:
  rsna-lumbar demo --work work/demo --weights weights
  rsna-lumbar demo --work work/demo40 --weights work/demo40/weights synthetic.studies=40 threads=1
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", type=Path, default=Path("work/demo"), help="work folder")
    parser.add_argument("--weights", type=Path, default=Path("weights"),
                        help="where trained models go (default: weights)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="demo recipe overrides, e.g. threads=1 severity.0.epochs=4")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.recipes import load_recipe
    from rsna_lumbar.run import run_chain

    run_chain(load_recipe("demo", args.overrides), args.work, args.weights, device=args.device)
    return 0
