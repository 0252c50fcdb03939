"""``rsna-lumbar crops``: cut and cache the 2.5D patches of every study of a split."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "cut oriented fixed-mm 2.5D crops around each level (cached, resumable)"
DESCRIPTION = """\
For every study of the split, cut the patches the severity models read: the spinal canal on
sagittal T2 and on the level's axial slice, each foramen on sagittal T1 (right mirrored onto
left), each lateral recess on the axial (right mirrored). Points come from
DIR/train_label_coordinates.csv (train) or --points (the output of 'rsna-lumbar localize').
A re-run skips a study only when its data folder, index rows, points and the crop settings
are those it was cut from and at least one view was cut; others are cut again; --force
recomputes all. Writes OUT/index.csv, OUT/{study}.npz and OUT/{study}.json (layout:
rsna_lumbar/crops/__init__.py). Fails when the split has studies but no crop was cut.
Crop size (mm, pixels, slices per view) is the default 64 px, 5 sagittal and 3 axial slices
unless --geometry names a model folder (the geometry it was trained at, from its model.json)
or a YAML file {family: {view: {mm, px, slices}}} (a recipe's 'crops' section).

example:
  rsna-lumbar crops --data DIR --split train --out work/crops/train
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="competition folder")
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--out", type=Path, required=True, help="crop cache folder")
    parser.add_argument("--points", type=Path, metavar="CSV",
                        help="points in train_label_coordinates.csv's schema (default: the labels)")
    parser.add_argument("--work", type=Path, default=Path("work"),
                        help="work folder for the header index (default: work)")
    parser.add_argument("--workers", type=int, help="processes (default: all cores)")
    parser.add_argument("--montages", type=int, default=3, metavar="N",
                        help="write OUT/{study}.png for the first N studies (default 3)")
    parser.add_argument("--force", action="store_true", help="recompute cached studies")
    parser.add_argument("--geometry", type=Path, metavar="MODEL_DIR|YAML",
                        help="crop geometry: a model folder's, or a YAML file (default: 64 px)")


def geometry_from(path: Path | None) -> dict:
    """The crop geometry ``--geometry`` names (module DESCRIPTION); the default without it."""
    import yaml

    from rsna_lumbar.crops.recipes import DEFAULT_GEOMETRY, geometry_from_settings
    from rsna_lumbar.models.folder import read_description

    if path is None:
        return DEFAULT_GEOMETRY
    if path.is_dir():
        return geometry_from_settings(read_description(path).get("crops") or {})
    if not path.is_file():
        raise FileNotFoundError(f"--geometry {path}: neither a model folder nor a YAML file")
    return geometry_from_settings(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.crops.cache import CropCache
    from rsna_lumbar.crops.stage import build_crops

    path = build_crops(args.data, args.split, args.out, points=args.points, work=args.work,
                       workers=args.workers, force=args.force, montages=args.montages,
                       geometry=geometry_from(args.geometry))  # fmt: skip
    index = CropCache(path.parent).index
    studies = index.study_id.nunique()
    if studies and not (index.views.fillna("") != "").any():
        points = args.points or args.data / "train_label_coordinates.csv"
        msg = (f"0 crops for {studies} studies of {args.data} ({args.split}): check that {points} "
               f"holds points of these studies' series, and the issues in {args.out}/"
               "{study}.json and the warnings above")  # fmt: skip
        raise ValueError(msg)
    return 0
