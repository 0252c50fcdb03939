"""``rsna-lumbar train``: cross-validated severity models into a self-describing folder."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train the severity models (k-fold CV, out-of-fold predictions, report)"
DESCRIPTION = """\
Train one 2.5D timm model per fold of FOLDS_CSV on the crop cache CROPS, with the labels of
TRAIN_CSV, into MODEL_DIR: config.yaml (resolved), model.json, folds.csv, priors.json,
fold_k/model.safetensors, oof_logits.csv, oof.csv (submission format), then the report
(metrics.json, calibration.json, report/*.png). Finished folds are skipped; an interrupted fold
resumes from its last epoch; --force starts over. KEY=VALUE overrides change the config
(strictly checked), e.g. train.epochs=4 model.spec=efficientnet_b0_25d.
Multi-GPU / multi-node: run the same command under torchrun (DistributedDataParallel).

examples:
  rsna-lumbar train --crops work/crops --folds work/folds.csv --labels data/train.csv \\
      --data data --config default --out weights/resnet18_25d train.epochs=8
  torchrun --nproc_per_node 4 -m rsna_lumbar train ... --out weights/effv2s model.spec=efficientnetv2_s_gru
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crops", type=Path, required=True, metavar="DIR", help="crop cache")
    parser.add_argument("--folds", type=Path, required=True, metavar="CSV", help="study_id,fold")
    parser.add_argument("--labels", type=Path, required=True, metavar="TRAIN_CSV")
    parser.add_argument("--config", default="default", metavar="YAML",
                        help="config file or packaged name (default, tiny); default: default")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="the competition folder the crops and labels come from, recorded in "
                             "MODEL_DIR/provenance.json; make push-weights refuses a model "
                             "folder without it")
    parser.add_argument("--force", action="store_true", help="delete MODEL_DIR and retrain")
    parser.add_argument("--stop-after-epochs", type=int, metavar="N",
                        help="stop after N epochs in this run (time-sliced sessions); rerun resumes")
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    parser.add_argument("--jitter-from", type=Path, metavar="LOCALIZER",
                        help="size the crops' training jitter (in-plane mm, slices) from this "
                             "localiser folder's measured out-of-fold error (data.point_jitter)")
    parser.add_argument("--localised-crops", type=Path, metavar="DIR",
                        help="crops of the same studies at the localiser's out-of-fold points "
                             "('rsna-lumbar crops --points'), read for data.localised_share of "
                             "the training draws")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from rsna_lumbar.training.config import load_config
    from rsna_lumbar.training.loop import end_process_group, train_cv

    overrides = list(args.overrides)
    if args.jitter_from is not None:
        from rsna_lumbar.crops.stage import read_geometry
        from rsna_lumbar.training.jitter import jitter_override

        overrides.append(jitter_override(args.jitter_from, read_geometry(args.crops)))
    config = load_config(args.config, overrides)
    if args.localised_crops is not None and not config.data.localised_share:
        print("warning: --localised-crops is unused while data.localised_share is 0 (set "
              "data.localised_share=0.5, say)", file=sys.stderr)
    if args.data is None:
        print(f"warning: no --data: {args.out} gets no provenance.json, and make push-weights "
              "will refuse it", file=sys.stderr)
    recipe = " ".join([f"--config {args.config}", *overrides])
    try:
        out = train_cv(args.crops, args.folds, args.labels, config, args.out, force=args.force,
                       stop_after_epochs=args.stop_after_epochs, data=args.data, recipe=recipe,
                       localised_crops=args.localised_crops)  # fmt: skip
    finally:
        end_process_group()
    if out is None:
        print(f"stopped after {args.stop_after_epochs} epoch(s); rerun the same command to resume")
        return 0
    if int(os.environ.get("RANK", "0")) == 0 and not args.no_report:
        from rsna_lumbar.training.report import build_report, format_report

        print(format_report(build_report(out, args.labels)))
    return 0
