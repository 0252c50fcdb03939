"""``rsna-lumbar predict``: a split in, a complete valid submission out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write a submission for every study of a split (never drops a row)"
DESCRIPTION = """\
Run inference on every study listed in DIR/{split}_series_descriptions.csv and write
SUB_CSV with 25 rows per study: localise the levels (TotalSpineSeg first when --tss finds it,
then the learned localiser of MODELS, or the labelled points on the train split), cut the
crops, average the calibrated probabilities of the ensemble members (MODELS/ensemble.yaml, or
every model folder in MODELS). Whatever cannot be predicted falls back to the class priors of
MODELS/priors.json, or uniform probabilities. A fallback submission is written first and
rewritten after every chunk of studies, so a complete file always exists.

Time: the budget counts from --started-at (default: now) and covers every stage. When the
measured pace would pass it, test-time augmentation is shed first, then ensemble members (the
last of the manifest first), then the localiser's extra models; studies that cannot start in time get the fallback.

The run summary (targets from models vs fallback, each member's fate, device, seconds per
stage) is written to SUB_CSV's folder as {stem}_summary.json. --strict exits with status 3
(after writing every row) when the run is not worth submitting: no model predicted, no
priors.json, or fewer than --min-coverage of the targets from models.

example:
  rsna-lumbar predict --data DIR --split test --out submission.csv --models weights --strict
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rsna_lumbar.cli.localize import add_tss_argument

    parser.add_argument("--data", type=Path, required=True, help="competition folder")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--out", type=Path, required=True, metavar="SUB_CSV")
    parser.add_argument("--models", type=Path, default=Path("weights"),
                        help="model folder / ensemble root (default: weights)")
    parser.add_argument("--work", type=Path,
                        help="scratch folder for points and crops (default: a temporary folder)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when it passes a smoke test, else the CPU")
    parser.add_argument("--budget-hours", type=float, default=8.5,
                        help="time budget from --started-at (default 8.5: Kaggle's 9 h less a "
                             "margin)")
    parser.add_argument("--started-at", type=float, metavar="UNIX_TIME",
                        help="when the budget started (the Kaggle kernel passes its own start)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 3 when the run is not worth submitting (see above)")
    parser.add_argument("--min-coverage", type=float, default=0.7,
                        help="fraction of targets that must come from models (default 0.7)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="test-time augmentation: also grade the canal crops mirrored "
                             "left-right and average (default: the manifest's 'tta', else off)")
    add_tss_argument(parser)


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.cli.localize import tss_from_args
    from rsna_lumbar.inference.predict import predict_split, summary_path

    summary = predict_split(args.data, args.split, args.out, args.models, work=args.work,
                            budget_s=args.budget_hours * 3600, started_at=args.started_at,
                            device=args.device, min_coverage=args.min_coverage,
                            tss=tss_from_args(args.tss), tta=args.tta)  # fmt: skip
    problems = summary.problems(args.min_coverage)
    print(f"{args.out}: {summary.targets} rows, {summary.coverage:.0%} of the targets from "
          f"models; run summary {summary_path(args.out)}")
    if args.strict and problems:
        print(f"rsna-lumbar predict: not fit to submit: {'; '.join(problems)}", file=sys.stderr)
        return 3
    return 0
