"""``rsna-lumbar register``: sagittal level points → axial slices, one row per (study, level)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "map labelled sagittal level points into each study's axial stacks"
DESCRIPTION = """\
For every study, each Spinal Canal Stenosis point of {split}_label_coordinates.csv (or of
--points, a CSV in the same schema such as localize's output) is turned into a patient-space
point through its sagittal slice's geometry and projected onto every slice of every axial stack
of the study. One row per (study, level) goes to --out:

  study_id, level, axial_series_id, instance_number, x, y, distance_mm, covered

the axial slice with the smallest point-to-plane distance among slices whose in-plane
projection falls inside the image, over all axial series; x, y the projected pixel (column,
row; pixel centres at integers); covered false when no axial slice lies within half its slice
spacing (+0.5 mm). The header index is reused from WORK/index/{split}.csv (built if absent).
Unreadable series are reported on stderr and skipped, never fatal.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="competition folder")
    parser.add_argument("--split", default="train", help="split (default: train)")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write")
    parser.add_argument("--work", type=Path, default=Path("work"), help="artefact folder")
    parser.add_argument("--points", type=Path, default=None,
                        help="label-coordinates CSV (default: DATA/{split}_label_coordinates.csv)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all)")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.registration import register

    register(args.data, args.split, args.out, work=args.work, points=args.points,
             workers=args.workers)
    print(args.out)
    return 0
