"""``rsna-lumbar report``: out-of-fold metric, balanced accuracy, confusion matrices, calibration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "OOF official metric, balanced accuracy, confusion matrices and calibration of a model folder"
DESCRIPTION = """\
Score MODEL_DIR's out-of-fold predictions with the official metric (its four terms), next to
the class-prior baseline; fit per-family temperatures on the OOF logits (cross-fitted across
folds so the calibrated score stays out of fold); balanced accuracy, per-grade recall and a
confusion matrix per condition. Writes MODEL_DIR/metrics.json, calibration.json,
oof_calibrated.csv and report/confusion_*.png, and prints a table.

example:
  rsna-lumbar report --model weights/resnet18_25d --labels data/train.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR")
    parser.add_argument("--labels", type=Path, required=True, metavar="TRAIN_CSV")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of a table")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.training.report import build_report, format_report

    metrics = build_report(args.model, args.labels)
    print(json.dumps(metrics, indent=1) if args.json else format_report(metrics))
    return 0
