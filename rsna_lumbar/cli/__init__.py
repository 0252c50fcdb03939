"""The ``rsna-lumbar`` command line: one thin module per sub-command.

Each module listed in :data:`COMMANDS` defines ``HELP`` (one line), ``DESCRIPTION`` (the
``--help`` text), ``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports (torch,
pydicom) happen inside ``run`` so that ``rsna-lumbar --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rsna_lumbar import __version__

COMMANDS: tuple[str, ...] = (
    "synth",
    "index",
    "register",
    "localize",
    "crops",
    "folds",
    "baseline",
    "predict",
    "score",
    "train", "report", "ablate", "models",
    "run", "recipes", "weights",
    "demo",
)

_EPILOG = """\
stages, in the order data flows:
  synth → index → register → localize → crops → folds → baseline/train → report
  → predict → score          (run: all of them by a recipe; demo: run --recipe demo)

Run 'rsna-lumbar COMMAND --help' for the options of one command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsna-lumbar",
        description=(
            "Lumbar spine MRI (RSNA 2024 LSDC layout) to severity grades: DICOM loading with "
            "true patient geometry, level localisation, crops, timm models, the official metric "
            "and the Kaggle submission."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rsna-lumbar {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages as well as progress"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"rsna_lumbar.cli.{name}")
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError) as error:
        # Expected failures (bad input files, invalid tables) get one clear line, not a traceback.
        if args.verbose:
            raise
        print(f"rsna-lumbar {args.command}: error: {error}", file=sys.stderr)
        return 1
