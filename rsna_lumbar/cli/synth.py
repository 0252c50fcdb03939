"""``rsna-lumbar synth``: write a synthetic competition folder (DICOM + CSVs + truth)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a synthetic competition folder with known truth (the embedded default data)"
DESCRIPTION = """\
Writes DIR in the layout of the Kaggle competition data (train/test images as DICOM, train.csv,
train_label_coordinates.csv, *_series_descriptions.csv, sample_submission.csv) from an
analytic lumbar phantom, plus DIR/truth/ (world points, latent severity, Bayes-optimal
probabilities, TotalSpineSeg-format label maps). Same seed, same bytes.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--studies", type=int, default=20, help="train studies (default 20)")
    parser.add_argument("--test-studies", type=int, default=None,
                        help="test studies (default max(1, studies // 5))")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (default: one per CPU, at most one per study)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="pixel-size factor: >1 renders coarser, smaller images (tests)")
    parser.add_argument("--force", action="store_true", help="rewrite an existing folder")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.synth.generate import generate

    generate(args.out, args.studies, args.seed, test_studies=args.test_studies,
             workers=args.workers, scale=args.scale, force=args.force)
    print(args.out)
    return 0
