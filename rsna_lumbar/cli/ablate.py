"""``rsna-lumbar ablate``: CV over config variants, one comparison table."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "cross-validate config variants (backbone, slices, crop size, views) into one table"
DESCRIPTION = """\
Train and report every variant of VARIANTS_YAML (dotted keys changed from --config) on the same
folds, each into OUT/NAME (resumable), then write OUT/comparison.csv and comparison.md sorted by
the out-of-fold official score. Every variant's config is validated before training starts.
With --localised-crops (crops at the localiser's out-of-fold points) each variant trains on them
for its data.localised_share and is also graded out of fold on them: the *_localised columns,
by which the table is then sorted.

variants file:
  common: {train.epochs: 4}
  variants:
    baseline: {}
    shared_backbone: {model.shared: true}
    spinal_sagittal_only: {data.views.spinal: [sag_t2]}

example:
  rsna-lumbar ablate --crops work/crops --folds work/folds.csv --labels data/train.csv \\
      --config default --variants rsna_lumbar/configs/ablation.yaml --out work/ablation
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crops", type=Path, required=True, metavar="DIR")
    parser.add_argument("--folds", type=Path, required=True, metavar="CSV")
    parser.add_argument("--labels", type=Path, required=True, metavar="TRAIN_CSV")
    parser.add_argument("--config", default="default", metavar="YAML")
    parser.add_argument("--variants", type=Path, required=True, metavar="VARIANTS_YAML")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    parser.add_argument("--force", action="store_true", help="retrain every variant")
    parser.add_argument("--only", default="", metavar="NAMES",
                        help="comma-separated variants to run (default: all); finished ones "
                             "are reused, so a partial run still gives a table")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="the competition folder the crops came from (recorded in each "
                             "variant's provenance.json)")
    parser.add_argument("--localised-crops", type=Path, metavar="DIR",
                        help="crops at the localiser's out-of-fold points ('rsna-lumbar crops "
                             "--points'): trained on for data.localised_share of the draws, "
                             "and a second out-of-fold grading on them")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="applied to every variant, after it")


def run(args: argparse.Namespace) -> int:
    import yaml

    from rsna_lumbar.training.ablate import run_ablation, to_markdown
    from rsna_lumbar.training.config import config_path

    base = yaml.safe_load(config_path(args.config).read_text(encoding="utf-8")) or {}
    table = run_ablation(args.crops, args.folds, args.labels, base, args.variants, args.out,
                         overrides=args.overrides, force=args.force, data=args.data,
                         localised_crops=args.localised_crops,
                         only=tuple(n.strip() for n in args.only.split(",") if n.strip()))
    print(to_markdown(table))
    return 0
