"""``rsna-lumbar report``: out-of-fold metric, balanced accuracy, confusion matrices, calibration."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "OOF official metric, balanced accuracy, confusion matrices and calibration of a model folder"
DESCRIPTION = """\
Score MODEL_DIR's out-of-fold predictions with the official metric (its four terms), next to
the class-prior baseline; fit per-family temperatures on the OOF logits (cross-fitted across
folds so the calibrated score stays out of fold); balanced accuracy, per-grade recall and a
confusion matrix per condition. Writes MODEL_DIR/metrics.json, calibration.json,
oof_calibrated.csv and report/confusion_*.png, and prints a table.

By default the OOF predictions are the ones training made, on crops centred on the labelled
points. With --crops, each fold model first predicts its held-out studies afresh on that cache
(kept as oof_logits_on_crops.csv): build it from the localiser's out-of-fold points of the
training studies and the score and the temperatures reflect the off-centre crops inference
will see (fit them there when training used --jitter-from). Rerun without --crops to go back.

examples:
  rsna-lumbar report --model weights/resnet18_25d --labels data/train.csv
  rsna-lumbar crops --data data --split train --points work/localizer/oof.csv --out work/crops_loc
  rsna-lumbar report --model weights/resnet18_25d --labels data/train.csv --crops work/crops_loc
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR")
    parser.add_argument("--labels", type=Path, required=True, metavar="TRAIN_CSV")
    parser.add_argument("--crops", type=Path, metavar="DIR",
                        help="re-predict the out-of-fold studies on this crop cache (e.g. placed "
                             "by the localiser) and report and calibrate on those predictions")
    parser.add_argument("--tta", action="store_true",
                        help="with --crops: average each canal prediction with its mirrored "
                             "crops' (as 'predict --tta' does)")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of a table")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.training.report import build_report, format_report

    if args.tta and args.crops is None:
        print("rsna-lumbar report: --tta re-predicts the held-out studies; give --crops "
              "(the training crops for the labelled points)", file=sys.stderr)
        return 2
    metrics = build_report(args.model, args.labels, args.crops, tta=args.tta)
    print(json.dumps(metrics, indent=1) if args.json else format_report(metrics))
    return 0
