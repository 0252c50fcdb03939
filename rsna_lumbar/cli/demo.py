"""``rsna-lumbar demo``: the main job on the embedded synthetic data, end to end."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

HELP = "run the whole kit on synthetic data (synth → … → submission.csv) in minutes on 2 cores"
DESCRIPTION = """\
Generate a synthetic competition folder (train and test splits), index it, split folds, train
the learned localiser out of fold, cut crops, train the severity models with k-fold CV, report
the out-of-fold metric beside the prior baseline and the Bayes floor, predict the test split,
validate the submission and score it against the synthetic truth. Stages resume: re-running
skips what is done. WEIGHTS is left ready for 'rsna-lumbar predict'.

example:
  rsna-lumbar demo --work work/demo --weights weights
  rsna-lumbar predict --data work/demo/data --split test --out sub.csv   # afterwards
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rsna_lumbar.demo import DemoPlan

    default = {f.name: f.default for f in dataclasses.fields(DemoPlan)}
    parser.add_argument("--work", type=Path, default=Path("work/demo"), help="work folder")
    parser.add_argument("--weights", type=Path, default=Path("weights"),
                        help="where trained models go (default: weights)")
    parser.add_argument("--studies", type=int, default=default["studies"], help="train studies (default %(default)s)")
    parser.add_argument("--test-studies", type=int, default=default["test_studies"],
                        help="test studies (default %(default)s)")
    parser.add_argument("--folds", type=int, default=default["folds"], help="CV folds (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=default["epochs"], help="epochs per fold (default %(default)s)")
    parser.add_argument("--config", default=default["config"],
                        help="severity training config: a packaged name or a YAML file (default %(default)s)")
    parser.add_argument("--localizer-steps", type=int, default=default["localizer_steps"],
                        help="localiser training steps per task and fold (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all cores; 1 on a machine shared "
                             "with other work)")
    parser.add_argument("--seed", type=int, default=default["seed"])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="training config overrides, e.g. train.threads=1")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.demo import DemoPlan, run_demo

    run_demo(DemoPlan(work=args.work, weights=args.weights, studies=args.studies,
                      test_studies=args.test_studies, seed=args.seed, folds=args.folds,
                      epochs=args.epochs, config=args.config,
                      localizer_steps=args.localizer_steps, threads=args.threads,
                      overrides=tuple(args.overrides)))  # fmt: skip
    return 0
