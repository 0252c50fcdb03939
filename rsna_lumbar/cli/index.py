"""``rsna-lumbar index``: header-only scan of a split → work/index/{split}.csv."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "index DICOM headers of a split (geometry, shape, description) into a CSV"
DESCRIPTION = """\
Reads every {split}_images/{study}/{series}/*.dcm header (pixel data is never decoded) on all
cores and writes one row per instance to WORK/index/{split}.csv: ImagePositionPatient,
ImageOrientationPatient, PixelSpacing, thickness, rows, columns, photometric interpretation,
transfer syntax, rescale and the series description from {split}_series_descriptions.csv.
Problems (truncated or non-DICOM files, empty or missing series folders, missing tags) go to
WORK/index/{split}_issues.csv and the log, naming study, series and file; none is fatal.
Reuses an index only when it was made from the same data folder, files and index version
(WORK/index/{split}.key.json), else rebuilds it and logs why; --force rebuilds it.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="competition folder")
    parser.add_argument("--split", default="train", help="train or test (default: train)")
    parser.add_argument("--work", type=Path, default=Path("work"), help="artefact folder")
    parser.add_argument("--force", action="store_true", help="rebuild an existing index")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all)")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.dicom.index import write_index

    path = write_index(args.data, args.split, args.work, force=args.force, workers=args.workers)
    print(path)
    return 0
