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
    extra_fraction: float = 0.5  # share of each batch drawn from ``fit(extra=...)`` (real exams)
