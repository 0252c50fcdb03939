"""``rsna-lumbar run``: every stage on one competition folder, by a recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "the whole chain on a competition folder by a recipe: index → … → submission, resumable"
DESCRIPTION = """\
Run every stage on DIR (the unzipped Kaggle download, or a synthetic folder) with the settings of
a recipe: header index → folds and class priors → learned localiser out of fold (or the packaged
one as is) → crops at the labelled and at the localiser's out-of-fold points → severity models (k-fold, one folder per
recipe member) → report (out of fold on both kinds of crops) → ensemble manifest → predict the
test split → validate and score where labels exist. Stages resume: a rerun skips what is done; a
work folder made from other data or training settings is refused, never reused.

Recipes: tiny (smoke run), demo (make demo), cpu (the measured 2-core recipe), gpu (one GPU,
pretrained backbones: 'rsna-lumbar weights pull' first), or a YAML file. Without --data a
recipe with a 'synthetic' section generates WORK/data. KEY=VALUE overrides any recipe key
('rsna-lumbar recipes show NAME' lists them). Writes WORK/summary.json; WEIGHTS is left ready
for 'rsna-lumbar predict' and 'make push-weights'.

examples:
  rsna-lumbar run --recipe tiny --work work/tiny --weights work/tiny/weights
  rsna-lumbar run --data DIR --recipe gpu --work work/gpu --weights weights --device cuda
  rsna-lumbar run --data DIR --recipe cpu --work work/cpu --weights weights --until report
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rsna_lumbar.run import STAGES  # a light module: its heavy imports are inside functions

    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="competition folder (default: the recipe's synthetic set in WORK/data)")
    parser.add_argument("--work", type=Path, required=True, help="work folder (resumable)")
    parser.add_argument("--weights", type=Path, required=True, metavar="OUT",
                        help="where the trained model folders, priors and manifest go")
    parser.add_argument("--recipe", default="demo", metavar="NAME",
                        help="packaged recipe name or YAML path (default: demo)")
    parser.add_argument("--until", choices=list(STAGES), metavar="STAGE",
                        help=f"stop after this stage: {', '.join(STAGES)}")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when it passes a smoke test, else the CPU")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe overrides, e.g. severity.0.epochs=3 localiser.batch=16")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.recipes import load_recipe
    from rsna_lumbar.run import run_chain

    recipe = load_recipe(args.recipe, args.overrides)
    run_chain(recipe, args.work, args.weights, args.data, until=args.until, device=args.device)
    return 0
