"""The localiser's training settings: a plain dataclass, importable without torch (the CLI
builds its ``--help`` from these defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    backbone: str = "lcnet_075"
    width: int = 32  # decoder channels
    steps: int = 300
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    pos_weight: float = 30.0
    seed: int = 0
    seeds: int = 1  # models per fold and task (seeds seed … seed + seeds − 1), averaged
    # the input grid: 0 keeps each task's own (128 px; heatmap stride 2 for sag_t2, else 4);
    # e.g. 256 with stride 2 sees the same field of view at twice the detail (Task.at_resolution)
    input_px: int = 0
    stride: int = 0
    extra_fraction: float = 0.5  # share of each batch drawn from ``fit(extra=...)`` (real exams)
    # auto | cpu | cuda (rsna_lumbar.devices.choose_device): CUDA with mixed precision when a GPU
    # passes the smoke test; on the CPU float32, the same models as before the setting existed
    device: str = "auto"

    def __post_init__(self):
        if self.seeds < 1:
            msg = f"seeds (models per fold) must be at least 1, got {self.seeds}"
            raise ValueError(msg)
        if self.input_px and (self.input_px < 64 or self.input_px % 32):
            msg = f"input_px must be 0 (each task's own) or a multiple of 32 ≥ 64, got {self.input_px}"
            raise ValueError(msg)
        if self.stride not in (0, 2, 4):
            msg = f"stride must be 0 (each task's own), 2 or 4, got {self.stride}"
            raise ValueError(msg)
