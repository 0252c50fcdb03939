"""``rsna-lumbar demo``: the main job on the embedded synthetic data, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the whole kit on synthetic data (synth → … → submission.csv), ~15 min on 2 cores"
DESCRIPTION = """\
Generate a synthetic competition folder, index it, split folds, cut crops, train the severity
models with k-fold CV, report the out-of-fold metric beside the prior baseline and the Bayes
floor, train the learned localiser, predict the test split and score it against the truth.
Stages resume: re-running skips what is done. WEIGHTS is left ready for 'rsna-lumbar predict'.

example:
  rsna-lumbar demo --work work/demo --weights weights
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", type=Path, default=Path("work/demo"), help="work folder")
    parser.add_argument("--weights", type=Path, default=Path("weights"),
                        help="where trained models go (default: weights)")
    parser.add_argument("--studies", type=int, default=40, help="train studies (default 40)")
    parser.add_argument("--test-studies", type=int, default=8, help="test studies (default 8)")
    parser.add_argument("--folds", type=int, default=4, help="CV folds (default 4)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fold (default 4)")
    parser.add_argument("--config", default="default", help="training config name or YAML")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.demo import DemoPlan, run_demo

    run_demo(DemoPlan(work=args.work, weights=args.weights, studies=args.studies,
                      test_studies=args.test_studies, seed=args.seed, folds=args.folds,
                      epochs=args.epochs, config=args.config))  # fmt: skip
    return 0
