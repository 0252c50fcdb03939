"""Learned localiser decoding: how each choice of :class:`~rsna_lumbar.localize.keypoints.predict.Decoding`
moves the points, side by side on the same studies and the same (packaged) models.

The studies: the demo's train split (80 synthetic studies, seed 0), which the packaged
localiser never saw. The baseline is the decoding before these choices (no mirrored pass, the
foramina anywhere on their side, the recesses on the registered axial slice); each row then adds
one choice, and the last is the kit's default. Figures per point type (``localize/evaluate.py``):
level accuracy, median and 95th-percentile error (mm), the share of points more than 12 mm
off, and the CPU seconds of the whole split. With the real exams beside the checkout
(``shared/data``), the packaged sagittal T2 models' canal levels on all 34 of them as acquired,
with and without the mirrored pass (the only choice that touches the canal), split into the
exams the shipped models did not train on and all.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rsna_lumbar.localize.evaluate import evaluate
from rsna_lumbar.localize.keypoints import realworld
from rsna_lumbar.localize.keypoints.model import load_models
from rsna_lumbar.localize.keypoints.predict import Decoding
from rsna_lumbar.localize.keypoints.train import study_stacks
from rsna_lumbar.localize.packaged import packaged
from rsna_lumbar.localize.stage import predict_split
from rsna_lumbar.synth.generate import generate
from rsna_lumbar.tables import read_label_coordinates

VARIANTS = {
    "baseline": Decoding(mirror=False, territories=False, axial_reach=0),
    "territories": Decoding(mirror=False, territories=True, axial_reach=0),
    "territories_axial_choice": Decoding(mirror=False, territories=True, axial_reach=1),
    "default (+ mirrored pass)": Decoding(),
}
STRUCTURE = {"Spinal Canal Stenosis": "canal", "Left Neural Foraminal Narrowing": "left_foramen",
             "Right Neural Foraminal Narrowing": "right_foramen",
             "Left Subarticular Stenosis": "left_recess", "Right Subarticular Stenosis": "right_recess"}
FAMILY = {"canal": "spinal", "left_foramen": "foraminal", "right_foramen": "foraminal",
          "left_recess": "subarticular", "right_recess": "subarticular"}


def _far_share(points: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Per family, the share of points more than 12 mm from the generator's true point."""
    points = points.assign(structure=points.condition.map(STRUCTURE))
    both = points.merge(truth, on=["study_id", "level", "structure"], suffixes=("", "_true"))
    xyz = ["world_x", "world_y", "world_z"]
    error = np.linalg.norm(both[xyz].to_numpy() - both[[c + "_true" for c in xyz]].to_numpy(), axis=1)
    far = pd.Series(error > 12.0).groupby(both.structure.map(FAMILY).to_numpy()).mean()
    return {family: round(float(share), 4) for family, share in far.items()}


def run(work: Path) -> dict:
    torch.set_num_threads(2)
    data = generate(work / "data", studies=80, seed=0, test_studies=30, workers=2, progress=False)
    coords = read_label_coordinates(data / "train_label_coordinates.csv")
    truth = pd.read_csv(data / "truth" / "points.csv").query("split == 'train'")
    stacks = study_stacks(data, "train", work)
    out = {"studies": int(coords.study_id.nunique()), "localiser": "packaged", "variants": {}}
    for name, decoding in VARIANTS.items():
        started = time.perf_counter()
        table = predict_split(data, "train", work / f"{name}.csv", packaged(), work=work,
                              device="cpu", decoding=decoding)  # fmt: skip
        seconds = time.perf_counter() - started
        metrics = evaluate(table, coords, stacks)
        far = _far_share(table, truth)
        out["variants"][name] = {
            "decoding": {"mirror": decoding.mirror, "territories": decoding.territories,
                         "axial_reach": decoding.axial_reach},
            "seconds": round(seconds, 1),
            **{family: {"level_accuracy": metrics[family]["level_accuracy"],
                        "median_mm": metrics[family]["median_mm"], "p95_mm": metrics[family]["p95_mm"],
                        "share_over_12mm": far.get(family)}
               for family in ("spinal", "foraminal", "subarticular")},
        }
    out["real_exams"] = _real_exams()
    return out


def _real_exams() -> dict | None:
    """Canal levels right on the real exams, mirrored pass off and on (None without them)."""
    if not realworld.real_exams():
        return None
    config, models = load_models(packaged())
    trained_on = {exam for exam, fold in config["packaged"]["real_folds"].items()
                  if fold != config["packaged"]["fold"]}  # fmt: skip
    result = {}
    for name, decoding in (("without_mirror", Decoding(mirror=False)), ("default", Decoding())):
        rows = realworld.measure_all(models["sag_t2"], decoding=decoding)
        unseen = rows[~rows.exam.isin(trained_on)]
        result[name] = {"all": realworld.summarise(rows), "not_trained_on": realworld.summarise(unseen),
                        "wrong_levels": rows.loc[~rows.correct, ["exam", "level"]].values.tolist()}
    return result
