"""Test fixture for TotalSpineSeg, built at test time (nothing binary is committed).

Two parts:

* :func:`phantom` (kit environment): a 1 mm sagittal "spine" with five lumbar discs, L1–L5,
  sacrum, canal and cord, as a label map in TotalSpineSeg's final scheme (the truth), as the
  step-1 scheme (all bone = 50) and as an **intensity image** whose values code the structures
  (:data:`INTENSITY`). Geometry follows a sagittal DICOM series: ``pixels[slice, row, col]``,
  columns run posterior, rows inferior, slices towards the patient's right, with an offset
  origin, so the NIfTI round trip is exercised.
* ``python tests/tss_fixture.py weights DIR`` (TotalSpineSeg environment, it needs nnunetv2):
  a weights folder ``DIR/nnUNet/results/Dataset10{1,2}_TotalSpineSeg_step{1,2}/
  nnUNetTrainerDAExtGPU__nnUNetPlans__3d_fullres/{dataset.json, plans.json,
  fold_0/checkpoint_final.pth}``. Each network is a 2-stage PlainConvUNet with 1×1×1 kernels,
  no norm and no non-linearity, wired so that every output channel's logit is
  ``0.1 · (I − threshold)``: the predicted label is a fixed function of voxel intensity, the
  same whatever the tiling. nnU-Net's region decoding keeps the last channel above 0.5, so
  thresholds rising in channel order give intensity bands (:data:`BANDS`).

How the live run is set up: ``docs/totalspineseg.md``, "Live test".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# Phantom layout (voxels of 1 mm). Rows run inferior; each level = vertebra then disc.
SHAPE = (24, 168, 64)  # (slices: right-wards, rows: inferior, cols: posterior)
VERTEBRA_H, DISC_H, TOP = 22, 8, 4
BODY_COLS, CANAL_COLS, CORD_COLS = (10, 36), (36, 46), (39, 43)
BODY_SLICES, CANAL_SLICES, CORD_SLICES = (2, 22), (8, 16), (10, 14)
CORD_ROWS = (0, 60)
SACRUM_H = 12
ORIGIN = np.array([11.5, -45.25, 80.0])  # LPS mm of voxel (0, 0, 0)
DISCS = (92, 93, 94, 95, 100)  # L1-L2 … L5-S1
VERTEBRAE = (41, 42, 43, 44, 45)  # L1 … L5
INTENSITY = {
    "disc": 100, "disc_L5_S": 200, "vertebra_odd": 300, "vertebra_even": 350,
    "sacrum": 400, "canal": 500, "cord": 600,
}


def lps_affine() -> np.ndarray:
    """LPS affine of the phantom: (col, row, slice) → mm; cols +y, rows −z, slices −x."""
    a = np.eye(4)
    a[:3, 0] = (0.0, 1.0, 0.0)
    a[:3, 1] = (0.0, 0.0, -1.0)
    a[:3, 2] = (-1.0, 0.0, 0.0)
    a[:3, 3] = ORIGIN
    return a


def disc_rows(n: int) -> tuple[int, int]:
    """Row range of disc ``n`` (0 = L1/L2)."""
    start = TOP + (n + 1) * VERTEBRA_H + n * DISC_H
    return start, start + DISC_H


def phantom(*, landmark: bool = True) -> dict[str, np.ndarray]:
    """Arrays ``(S, R, C)``: ``truth`` (final labels), ``step1`` (bone = 50), ``image`` (float32).

    With ``landmark=False`` the L5-S1 disc gets the ordinary disc intensity, so TotalSpineSeg
    finds no landmark and must fail.
    """
    truth = np.zeros(SHAPE, np.uint8)
    image = np.zeros(SHAPE, np.float32)
    cols, slices = slice(*BODY_COLS), slice(*BODY_SLICES)
    for n in range(5):
        top = TOP + n * (VERTEBRA_H + DISC_H)
        truth[slices, top : top + VERTEBRA_H, cols] = VERTEBRAE[n]
        # TotalSpineSeg's step 2 alternates: L1, L3, L5 "even", L2, L4 "odd"
        image[slices, top : top + VERTEBRA_H, cols] = INTENSITY[
            "vertebra_even" if n % 2 == 0 else "vertebra_odd"]
        r0, r1 = disc_rows(n)
        truth[slices, r0:r1, cols] = DISCS[n]
        image[slices, r0:r1, cols] = INTENSITY["disc_L5_S" if n == 4 and landmark else "disc"]
    s0 = disc_rows(4)[1]
    truth[slices, s0 : s0 + SACRUM_H, cols] = 50
    image[slices, s0 : s0 + SACRUM_H, cols] = INTENSITY["sacrum"]
    truth[slice(*CANAL_SLICES), :, slice(*CANAL_COLS)] = 2
    image[slice(*CANAL_SLICES), :, slice(*CANAL_COLS)] = INTENSITY["canal"]
    truth[slice(*CORD_SLICES), slice(*CORD_ROWS), slice(*CORD_COLS)] = 1
    image[slice(*CORD_SLICES), slice(*CORD_ROWS), slice(*CORD_COLS)] = INTENSITY["cord"]
    step1 = truth.copy()
    step1[np.isin(truth, VERTEBRAE)] = 50
    return {"truth": truth, "step1": step1, "image": image}


def expected_points() -> dict[str, np.ndarray]:
    """Where each level's points must be, float64 ``(5, 3)`` LPS mm, per point kind.

    Disc centre: the middle of the disc box. Posterior edge: its last column (touching the
    canal), centred on the canal's slices. Foramina: the posterior edge moved by half the
    canal width (8 mm) plus the 6 mm margin towards the patient's left (+x) and right, 0.3 of
    the 30 mm disc gap up (rows run inferior) and 0.3 of the 10 mm canal depth back.
    """
    from rsna_lumbar.geometry.affine import voxel_to_world

    out: dict[str, list] = {k: [] for k in ("disc_centre", "disc_posterior", "foramen_left",
                                            "foramen_right")}
    mid_slice = (CANAL_SLICES[0] + CANAL_SLICES[1] - 1) / 2
    offset = (CANAL_SLICES[1] - CANAL_SLICES[0]) / 2 + 6.0
    gap = VERTEBRA_H + DISC_H
    col = BODY_COLS[1] - 1 + 0.3 * (CANAL_COLS[1] - CANAL_COLS[0])
    for n in range(5):
        r0, r1 = disc_rows(n)
        row = (r0 + r1 - 1) / 2
        out["disc_centre"].append([(BODY_COLS[0] + BODY_COLS[1] - 1) / 2, row,
                                   (BODY_SLICES[0] + BODY_SLICES[1] - 1) / 2])
        out["disc_posterior"].append([BODY_COLS[1] - 1, row, mid_slice])
        up = row - 0.3 * gap
        out["foramen_left"].append([col, up, mid_slice - offset])  # slices go to the right
        out["foramen_right"].append([col, up, mid_slice + offset])
    return {k: voxel_to_world(lps_affine(), np.array(v, float)) for k, v in out.items()}


def write_nifti(pixels: np.ndarray, path: Path, *, dtype=None) -> Path:
    """Write ``pixels[slice, row, col]`` with the phantom's affine as NIfTI (index (col, row, slice), RAS)."""
    import nibabel as nib

    from rsna_lumbar.geometry.affine import lps_to_ras_affine

    data = np.ascontiguousarray(pixels.transpose(2, 1, 0))
    if dtype is not None:
        data = data.astype(dtype)
    img = nib.Nifti1Image(data, lps_to_ras_affine(lps_affine()))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


# ---- hand-set nnU-Net weights (run in the TotalSpineSeg environment) -----------------------

TRAINER_FOLDER = "nnUNetTrainerDAExtGPU__nnUNetPlans__3d_fullres"
DATASETS = {
    "Dataset101_TotalSpineSeg_step1": {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "disc": [1, 2, 3, 4, 5], "disc_C2_C3": 2, "disc_C7_T1": 3,
                   "disc_T12_L1": 4, "disc_L5_S": 5, "vertebrae": [6, 7], "vertebrae_C1": 7,
                   "canal": [8, 9], "cord": 9},
        "regions_class_order": [1, 2, 3, 4, 5, 6, 7, 8, 9],
    },
    "Dataset102_TotalSpineSeg_step2": {
        "channel_names": {"0": "MRI", "1": "noNorm"},
        "labels": {"background": 0, "disc": [1, 2, 3, 4, 5], "disc_C2_C3": 2, "disc_C7_T1": 3,
                   "disc_T12_L1": 4, "disc_L5_S": 5, "vertebrae": [6, 7, 8, 9],
                   "vertebrae_O": 7, "vertebrae_E": 8, "sacrum": 9, "canal": [10, 11],
                   "cord": 11},
        "regions_class_order": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    },
}
NEVER = None
BANDS = {  # intensity threshold per output channel, in channel order; NEVER = never fires
    "Dataset101_TotalSpineSeg_step1": [50, NEVER, NEVER, NEVER, 150, 250, NEVER, 450, 550],
    "Dataset102_TotalSpineSeg_step2": [50, NEVER, NEVER, NEVER, 150, NEVER, 275, 325, 375,
                                       450, 550],
}


def _plans(dataset: str, n_in: int) -> dict:
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 2, "features_per_stage": [4, 4],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[1, 1, 1], [1, 1, 1]], "strides": [[1, 1, 1], [2, 2, 2]],
            "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
            "norm_op": None, "norm_op_kwargs": None, "dropout_op": None,
            "dropout_op_kwargs": None, "nonlin": None, "nonlin_kwargs": None,
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resample = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    intensity = {"max": 600.0, "mean": 300.0, "median": 300.0, "min": 0.0,
                 "percentile_00_5": 0.0, "percentile_99_5": 600.0, "std": 150.0}
    return {
        "dataset_name": dataset, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [32, 32, 32], "median_image_size_in_voxels": [64, 64, 64],
            "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["NoNormalization"] * n_in,
            "use_mask_for_norm": [False] * n_in,
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": resample,
            "resampling_fn_seg_kwargs": {**resample, "is_seg": True},
            "resampling_fn_probabilities_kwargs": resample,
            "architecture": arch, "batch_dice": False,
        }},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(c): intensity for c in range(n_in)},
    }


def write_weights(root: Path) -> Path:
    """Write both hand-set model folders under ``root/nnUNet/results``; returns ``root``."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    for dataset, spec in DATASETS.items():
        n_in, bands = len(spec["channel_names"]), BANDS[dataset]
        plans = _plans(dataset, n_in)
        arch = plans["configurations"]["3d_fullres"]["architecture"]
        net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"],
                                     arch["_kw_requires_import"], n_in, len(bands),
                                     deep_supervision=False)
        state = net.state_dict()  # shares storage with the parameters; some are aliased
        for tensor in state.values():  # (convs.0.conv is also convs.0.all_modules.0)
            tensor.zero_()
        convs = [k for k in state if k.endswith(".weight") and state[k].ndim == 5]
        enc0 = next(k for k in convs if k.startswith("encoder.stages.0."))
        dec0 = next(k for k in convs if k.startswith("decoder.stages.0."))
        seg = next(k for k in convs if k.startswith("decoder.seg_layers."))
        state[enc0][0, 0] = 1.0  # feature 0 = image channel 0
        state[dec0][0, 4] = 1.0  # input is cat(upsampled 4, skip 4): feature 0 = skip 0
        for ch, threshold in enumerate(bands):
            if threshold is NEVER:
                state[seg.replace("weight", "bias")][ch] = -20.0
            else:
                state[seg][ch, 0] = 0.1
                state[seg.replace("weight", "bias")][ch] = -0.1 * threshold
        net.load_state_dict(state)  # strict: the keys match the plans
        state = net.state_dict()
        folder = root / "nnUNet" / "results" / dataset / TRAINER_FOLDER
        (folder / "fold_0").mkdir(parents=True, exist_ok=True)
        dataset_json = {**spec, "numTraining": 0, "file_ending": ".nii.gz"}
        (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        (folder / "plans.json").write_text(json.dumps(plans, indent=2))
        checkpoint = {
            "network_weights": state, "trainer_name": "nnUNetTrainerDAExtGPU",
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0,
                          "dataset_json": dataset_json, "device": "cpu"},
            "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 0,
        }
        torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return root


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "weights":
        sys.exit("usage: python tests/tss_fixture.py weights DIR   (in the TotalSpineSeg env)")
    print(write_weights(Path(sys.argv[2])))
