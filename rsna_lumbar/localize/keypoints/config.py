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
    extra_fraction: float = 0.5  # share of each batch drawn from ``fit(extra=...)`` (real exams)
    # auto | cpu | cuda (rsna_lumbar.devices.choose_device): CUDA with mixed precision when a GPU
    # passes the smoke test; on the CPU float32, the same models as before the setting existed
    device: str = "auto"

    def __post_init__(self):
        if self.seeds < 1:
            msg = f"seeds (models per fold) must be at least 1, got {self.seeds}"
            raise ValueError(msg)
