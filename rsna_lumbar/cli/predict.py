"""``rsna-lumbar predict``: a split in, a complete valid submission out."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a submission for every study of a split (never drops a row)"
DESCRIPTION = """\
Run inference on every study listed in DIR/{split}_series_descriptions.csv and write
SUB_CSV with 25 rows per study. Whatever cannot be predicted falls back to the class priors
of the model folder (MODELS/priors.json), or uniform probabilities; each fallback is logged.

example:
  rsna-lumbar predict --data DIR --split test --out submission.csv --models weights
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="competition folder")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--out", type=Path, required=True, metavar="SUB_CSV")
    parser.add_argument("--models", type=Path, default=Path("weights"),
                        help="model folder / ensemble root (default: weights)")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.inference.predict import predict_split

    predict_split(args.data, args.split, args.out, args.models)
    return 0
