"""Which device runs the networks: CUDA only when a real kernel launch works on it, else the CPU.

``torch.cuda.is_available()`` is not enough: a GPU whose architecture the installed torch has no
kernels for (Kaggle's P100 under a cu128 build) reports True and fails on the first operation.
:func:`choose_device` therefore runs a smoke test — a convolution, a matrix product and a
softmax, synchronised — before it hands out CUDA.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

LOGGER = logging.getLogger(__name__)
CHOICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    """The device chosen and why (``note``: one line for logs and run summaries)."""

    device: torch.device
    note: str

    def as_dict(self) -> dict[str, str]:
        return {"device": str(self.device), "note": self.note}


def cuda_smoke_test() -> str | None:
    """Run a few real CUDA operations; ``None`` when they work, else the error in one line."""
    try:
        x = torch.randn(2, 3, 16, 16, device="cuda")
        w = torch.randn(4, 3, 3, 3, device="cuda")
        y = torch.nn.functional.conv2d(x, w).flatten(1)
        z = torch.softmax(y @ y.T, dim=1)
        torch.cuda.synchronize()
        if not torch.isfinite(z).all().item():
            return "non-finite results"
    except Exception as error:  # noqa: BLE001 - any failure means: do not use this GPU
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


def choose_device(requested: str = "auto") -> DeviceChoice:
    """``auto``: CUDA when visible and its smoke test passes, else the CPU; ``cpu``; ``cuda``.

    Raises:
        ValueError: an unknown choice, or ``cuda`` when no GPU is visible or the smoke test fails
            (the message says to use ``auto`` or ``cpu``).
    """
    if requested not in CHOICES:
        raise ValueError(f"device {requested!r}: use one of {', '.join(CHOICES)}")
    if requested == "cpu":
        return DeviceChoice(torch.device("cpu"), "cpu requested")
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise ValueError("device cuda requested but no GPU is visible: use auto or cpu")
        return DeviceChoice(torch.device("cpu"), "no GPU visible")
    failure = cuda_smoke_test()
    if failure is None:
        name = torch.cuda.get_device_name(0)
        return DeviceChoice(torch.device("cuda"), f"CUDA smoke test passed on {name}")
    if requested == "cuda":
        raise ValueError(f"device cuda requested but the GPU fails a smoke test ({failure}): "
                         "use auto or cpu")
    LOGGER.error("a GPU is visible but fails the CUDA smoke test (%s): running on the CPU", failure)
    return DeviceChoice(torch.device("cpu"), f"GPU unusable, CUDA smoke test failed: {failure}")
