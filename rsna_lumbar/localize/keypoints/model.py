"""The keypoint network: a timm encoder (``features_only``) + a light FPN decoder → heatmaps.

Shapes: input float32 ``(B, in_chans, H, W)`` (``H = W = input_px`` of the task, a multiple of
32); output logits ``(B, n_points, H / stride, W / stride)``, ``stride`` 2 or 4 (the task's
``Task.stride``; :data:`STRIDE` = 4 for folders written before it was a setting). A point's
heatmap peak is decoded with :func:`decode_peaks` into input-pixel coordinates
``(u = column, v = row)``.

A trained localiser is a self-describing folder: ``config.json`` (the tasks, their grids and
the backbone) and one ``{task}_fold{k}.safetensors`` per trained fold model; predictions
average the heatmaps of a task's fold models. timm is always built with ``pretrained=False``
(offline: nothing is downloaded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rsna_lumbar.atomic import atomic_path, write_text
from rsna_lumbar.localize.keypoints.dataset import Task, cell_centres

STRIDE = 4


class HeatmapNet(nn.Module):
    """timm encoder + top-down FPN (strides 32 → ``stride``, nearest upsampling) + a 3×3 head
    per point channel. Sized for CPU training: the decoder costs a fraction of the encoder."""

    def __init__(self, backbone: str = "lcnet_075", in_chans: int = 3, n_points: int = 5,
                 width: int = 32, stride: int = STRIDE):  # fmt: skip
        super().__init__()
        import timm

        self.task = None  # the Task (input grid) it was trained on, once trained or loaded
        if stride not in (2, 4):
            raise ValueError(f"HeatmapNet stride must be 2 or 4; got {stride}")
        self.stride = stride

        self.encoder = timm.create_model(backbone, pretrained=False, features_only=True,
                                         in_chans=in_chans, out_indices=(0, 1, 2, 3, 4))  # fmt: skip
        chans = self.encoder.feature_info.channels()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in chans)  # [0]: stride 2
        self.smooth = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(width, n_points, 3, padding=1)
        nn.init.constant_(self.head.bias, -4.0)  # start from "no point here"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = 0 if self.stride == 2 else 1
        feats = self.encoder(x)[first:]  # strides (2,) 4, 8, 16, 32
        laterals = list(self.lateral)[first:]
        y = laterals[-1](feats[-1])
        for lateral, feat in zip(laterals[-2::-1], feats[-2::-1]):
            y = F.interpolate(y, size=feat.shape[-2:], mode="nearest") + lateral(feat)
        return self.head(self.smooth(y))


def decode_peaks(prob: torch.Tensor, stride: int = STRIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """Peak of each heatmap, refined to sub-cell precision by a 3-point Gaussian (log-parabola)
    fit along each axis (exact for the Gaussian targets the model is trained on).

    Args:
        prob: ``(..., h, w)`` probabilities (sigmoid of the logits) on a grid of ``stride``
            input pixels per cell.

    Returns:
        ``(uv, score)``: ``uv`` ``(..., 2)`` input-pixel ``(column, row)`` of the peak,
        ``score`` ``(...)`` the peak probability.
    """
    h, w = prob.shape[-2:]
    flat = prob.reshape(-1, h, w).double()
    score, idx = flat.reshape(len(flat), -1).max(dim=1)
    rows, cols = idx // w, idx % w
    uv = torch.stack([cols, rows], dim=1).double()
    logp = torch.log(flat.clamp_min(1e-12))
    n = torch.arange(len(flat))
    for axis, (pos, size) in enumerate(((cols, w), (rows, h))):
        lo, hi = (pos - 1).clamp(0, size - 1), (pos + 1).clamp(0, size - 1)
        if axis == 0:
            a, b, c = logp[n, rows, lo], logp[n, rows, pos], logp[n, rows, hi]
        else:
            a, b, c = logp[n, lo, cols], logp[n, pos, cols], logp[n, hi, cols]
        curv = a - 2 * b + c
        ok = (curv < -1e-9) & (pos > 0) & (pos < size - 1)
        offset = torch.where(ok, 0.5 * (a - c) / torch.where(ok, curv, -1.0), 0.0).clamp(-0.5, 0.5)
        uv[:, axis] += offset
    uv = cell_centres(uv, stride).float()
    return uv.reshape(*prob.shape[:-2], 2), score.float().reshape(prob.shape[:-2])


def save_state(model: nn.Module, path: str | os.PathLike, half: bool = False) -> None:
    """Write a model's weights to a safetensors file, atomically; ``half``: floating-point
    tensors in float16 (half the size; :func:`load_models` reads them back into float32)."""
    from safetensors.torch import save_file

    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    if half:
        state = {key: value.half() if value.is_floating_point() else value for key, value in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights :func:`save_state` wrote."""
    from safetensors.torch import load_file

    return load_file(str(path))


def save_models(folder: str | os.PathLike, config: dict, models: dict[str, list[nn.Module]]) -> Path:
    """Write ``config.json`` and one safetensors file per trained model.

    ``models[task]`` lists the models fold by fold, ``config["models_per_fold"]`` (default 1)
    of each: ``{task}_fold{f}.safetensors``, or ``{task}_fold{f}_seed{s}.safetensors`` when a
    fold has several.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config["files"] = {}
    per_fold = int(config.get("models_per_fold", 1))
    for task, fold_models in models.items():
        names = []
        for k, model in enumerate(fold_models):
            fold, seed = divmod(k, per_fold)
            name = f"{task}_fold{fold}" + (f"_seed{seed}" if per_fold > 1 else "") + ".safetensors"
            save_state(model, folder / name)
            names.append(name)
        config["files"][task] = names
    write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")
    return folder


def load_models(folder: str | os.PathLike) -> tuple[dict, dict[str, list[HeatmapNet]]]:
    """Read a localiser folder written by :func:`save_models` → ``(config, {task: models})``."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        msg = (f"{path} not found: train a localiser first with 'rsna-lumbar localize --split "
               f"train --data DIR --model {folder}', or pass --model with a trained folder")
        raise FileNotFoundError(msg)
    config = json.loads(path.read_text())
    models: dict[str, list[HeatmapNet]] = {}
    for task, names in config["files"].items():
        spec = config["tasks"][task]
        for name in names:
            model = HeatmapNet(config["backbone"], spec["in_chans"], spec["n_points"],
                               config.get("width", 64), spec.get("stride", STRIDE))  # fmt: skip
            model.load_state_dict(load_state(folder / name))
            model.task = Task.from_config(spec)
            models.setdefault(task, []).append(model.eval())
    return config, models


def fold_members(config: dict, task_models: list, fold: int) -> list:
    """The models of one fold among a task's models as :func:`load_models` returns them
    (``config["models_per_fold"]`` consecutive ones, default 1): for out-of-fold use."""
    per_fold = int(config.get("models_per_fold", 1))
    return task_models[fold * per_fold:(fold + 1) * per_fold]
