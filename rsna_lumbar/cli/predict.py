"""``rsna-lumbar predict``: a split in, a complete valid submission out."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a submission for every study of a split (never drops a row)"
DESCRIPTION = """\
Run inference on every study listed in DIR/{split}_series_descriptions.csv and write
SUB_CSV with 25 rows per study: localise the levels (TotalSpineSeg first when --tss finds it,
then the learned localiser of MODELS, or the labelled points on the train split), cut the
crops, average the calibrated probabilities of the ensemble members (MODELS/ensemble.yaml, or
every model folder in MODELS). Whatever cannot be predicted falls back to the class priors of
MODELS/priors.json, or uniform probabilities; each fallback is logged. Members are shed, never
rows, when the time budget runs short.

example:
  rsna-lumbar predict --data DIR --split test --out submission.csv --models weights
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rsna_lumbar.cli.localize import add_tss_argument

    parser.add_argument("--data", type=Path, required=True, help="competition folder")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--out", type=Path, required=True, metavar="SUB_CSV")
    parser.add_argument("--models", type=Path, default=Path("weights"),
                        help="model folder / ensemble root (default: weights)")
    parser.add_argument("--work", type=Path,
                        help="scratch folder for points and crops (default: next to SUB_CSV)")
    parser.add_argument("--budget-hours", type=float, default=8.5,
                        help="total time budget; ensemble members are shed to honour it "
                             "(default 8.5: Kaggle's 9 h less a margin)")
    add_tss_argument(parser)


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.cli.localize import tss_from_args
    from rsna_lumbar.inference.predict import predict_split

    predict_split(args.data, args.split, args.out, args.models, work=args.work,
                  budget_s=args.budget_hours * 3600, tss=tss_from_args(args.tss))
    return 0
