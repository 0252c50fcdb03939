"""``rsna-lumbar localize``: the learned keypoint localiser (train out of fold, or predict),
chained after TotalSpineSeg when predicting (``--tss``, shared with ``rsna-lumbar predict``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rsna_lumbar.localize import TotalSpineSeg

HELP = "learned localiser: label points (slice, x, y, world) for every study"
DESCRIPTION = """\
Predicts label coordinates in the schema of train_label_coordinates.csv (study_id, series_id,
instance_number, condition, level, x, y) plus world_x, world_y, world_z (LPS mm), source and
confidence: Spinal Canal Stenosis on the Sagittal T2/STIR series, both Neural Foraminal
Narrowing sides on the Sagittal T1 series, both Subarticular Stenosis sides on the axial slice
registered from the predicted canal point. One row per (study, condition, level) it could place.

--split train: trains one heatmap model per task and fold (folds from --folds, a CSV written
  by 'rsna-lumbar folds', else made here with --n-folds), writes the out-of-fold predictions
  to --out, OUT.metrics.json (median / 95th-percentile error in mm per point type, level
  accuracy, axial-slice disagreement) and the fold models to --model. With the real exams
  (--real), the sag_t2 folds also train on the real exams outside the fold and are measured on
  those inside it, as acquired and tightly framed (sacrum and L1/L2 just in view):
  --model/real.csv, "real" and "real_tight" in the metrics.
--split test (or any other): loads --model (default weights/localizer, else the packaged
  localiser, which the log names) and predicts every study of the split. With
  TotalSpineSeg (--tss), each study's Sagittal T2 goes to it first: when its five levels pass
  the sanity checks, the canal points (7 mm behind the posterior disc edges) and the foramina
  come from it (source "totalspineseg"); otherwise (absent, failed, doubtful numbering) the
  study gets the learned points, and the log says why. Subarticular points always come from
  the learned axial model. Fails when the split has studies but no row was placed.
"""
TSS_CHOICES = ("auto", "on", "off")  # localize.TSS_MODES; not imported, the parser stays light
DEVICE_CHOICES = ("auto", "cpu", "cuda")  # rsna_lumbar.devices.CHOICES, likewise not imported


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rsna_lumbar.localize.keypoints.config import TrainConfig

    parser.add_argument("--data", type=Path, required=True, help="competition folder")
    parser.add_argument("--split", default="test", help="train (OOF training) or a split to predict")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write")
    parser.add_argument("--model", type=Path, default=None,
                        help="localiser folder to write (train; default weights/localizer) or read "
                             "(default weights/localizer when it holds one, else the localiser "
                             "packaged with the kit: its model card is "
                             "rsna_lumbar/localize/pretrained/MODEL_CARD.md)")
    parser.add_argument("--work", type=Path, default=Path("work"), help="artefact folder (index)")
    parser.add_argument("--folds", type=Path, default=None, help="folds CSV (study_id, fold)")
    parser.add_argument("--n-folds", type=int, default=5, help="folds made here without --folds")
    parser.add_argument("--steps", default="300",
                        help="training steps per model: N, or per task e.g. sag_t2=300,axial=100")
    parser.add_argument("--batch", type=int, default=16, help="training batch size")
    parser.add_argument("--seeds", type=int, default=TrainConfig.seeds,
                        help="models per fold and task, trained on different seeds and averaged "
                             "(variance down, training and inference time × N)")
    parser.add_argument("--backbone", default=TrainConfig.backbone, help="timm encoder (features_only)")
    parser.add_argument("--width", type=int, default=TrainConfig.width, help="decoder channels")
    parser.add_argument("--input-px", type=int, default=TrainConfig.input_px, metavar="PX",
                        help="input grid in pixels over the same field of view (default 0: each "
                             "task's own, 128; e.g. 256 for twice the detail)")
    parser.add_argument("--stride", type=int, choices=(0, 2, 4), default=TrainConfig.stride,
                        help="heatmap stride (default 0: each task's own, 2 for sag_t2 else 4)")
    parser.add_argument("--tasks", default="sag_t2,sag_t1,axial",
                        help="comma-separated tasks to train: sag_t2, sag_t1, axial")
    parser.add_argument("--real", choices=("auto", "on", "off"), default="auto",
                        help="train and measure sag_t2 with the 34 real exams out of fold "
                             "(auto: those found in shared/data/real-lumbar and real-lumbar-vb3, "
                             "or RSNA_REAL_LUMBAR and RSNA_REAL_LUMBAR_VB3)")
    add_tss_argument(parser)
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="where the heatmap models train and predict (auto: CUDA, with mixed "
                             "precision, when a GPU passes a smoke test, else the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (per job)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="models trained at once, one process each (same models as 1; "
                             "jobs × threads ≤ cores)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None, help="processes for the index")


def add_tss_argument(parser: argparse.ArgumentParser) -> None:
    """``--tss auto|on|off``: TotalSpineSeg before the learned localiser when predicting."""
    parser.add_argument("--tss", choices=TSS_CHOICES, default="auto",
                        help="TotalSpineSeg first for the canal and foraminal points when "
                             "predicting, the learned localiser where it fails or is doubtful "
                             "(auto: when its program and weights are found; on: required; "
                             "off: learned only). Minutes per study on a CPU, seconds on a GPU")


def tss_from_args(mode: str) -> TotalSpineSeg | None:
    """The TotalSpineSeg runner for a ``--tss`` choice, or None; ``on`` without it installed
    raises ``FileNotFoundError`` with the install hint (one clear CLI error line)."""
    from rsna_lumbar.localize import TotalSpineSegUnavailable, tss_runner

    try:
        return tss_runner(mode)
    except TotalSpineSegUnavailable as err:
        raise FileNotFoundError(f"--tss on, but TotalSpineSeg is unavailable: {err}") from err


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from rsna_lumbar.localize.keypoints.config import TrainConfig
    from rsna_lumbar.localize.oof import train_oof
    from rsna_lumbar.localize.packaged import DEFAULT_FOLDER, resolve
    from rsna_lumbar.localize.stage import predict_split
    from rsna_lumbar.tables import split_study_ids

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.split == "train" and args.tss == "on":
        msg = "--tss applies when predicting; --split train trains the learned localiser"
        raise ValueError(msg)
    if args.split == "train":
        tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
        steps = _steps(args.steps, tasks)
        cfg = TrainConfig(backbone=args.backbone, width=args.width, input_px=args.input_px,
                          stride=args.stride, steps=max(steps.values()),
                          batch=args.batch, seeds=args.seeds, device=args.device)
        model = args.model if args.model is not None else DEFAULT_FOLDER
        metrics = train_oof(args.data, args.out, model, work=args.work, folds=args.folds,
                            n_folds=args.n_folds, cfg=cfg, tasks=tasks, workers=args.workers,
                            steps=steps, real={"auto": None, "on": True, "off": False}[args.real],
                            jobs=args.jobs)  # fmt: skip
        print(json.dumps(metrics, indent=2))
    else:
        from rsna_lumbar.localize import tss_level_finder

        levels = tss_level_finder(tss_from_args(args.tss), args.work / "totalspineseg")
        table = predict_split(args.data, args.split, args.out, resolve(args.model), work=args.work,
                              workers=args.workers, levels=levels, device=args.device)
        studies = len(split_study_ids(args.data, args.split)) if table.empty else 0
        if studies:
            msg = (f"0 rows for {studies} studies of {args.data} ({args.split}): check that "
                   f"{args.split}_images holds their DICOM series, that "
                   f"{args.split}_series_descriptions.csv names their Sagittal T2/STIR, "
                   "Sagittal T1 and Axial T2 series, and the warnings above")  # fmt: skip
            raise ValueError(msg)
        print(f"{len(table)} rows for {table.study_id.nunique()} studies → {args.out}")
    return 0


def _steps(text: str, tasks: tuple[str, ...]) -> dict[str, int]:
    """``"300"`` → every task 300; ``"sag_t2=300,axial=100"`` → per task (others: the largest)."""
    if "=" not in text:
        return {t: int(text) for t in tasks}
    given = {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(",") if part)}
    unknown = set(given) - set(tasks)
    if unknown:
        msg = f"--steps names tasks {sorted(unknown)} not in --tasks {list(tasks)}"
        raise ValueError(msg)
    return {t: given.get(t, max(given.values())) for t in tasks}
