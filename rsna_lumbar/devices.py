"""Which device runs the networks, and mixed precision there: a foundation (imports torch only),
shared by the localiser, the severity models, training and inference.

CUDA only when a real kernel launch works on it, else the CPU. ``torch.cuda.is_available()`` is
not enough: a GPU whose architecture the installed torch has no kernels for (Kaggle's P100 under
a cu128 build) reports True and fails on the first operation. :func:`choose_device` therefore
runs a smoke test — a convolution, a matrix product and a softmax, synchronised — before it
hands out CUDA.

Mixed precision is for CUDA only: :func:`autocast` (bfloat16 where the GPU supports it, else
float16) and :func:`grad_scaler` (loss scaling, needed by float16 only). On the CPU both are
pass-throughs, so a CPU run computes exactly what it would without them (float32, same
operations in the same order).
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


def cuda_smoke_test(index: int = 0) -> str | None:
    """Run a few real CUDA operations on GPU ``index``; ``None`` when they work, else the error in
    one line."""
    try:
        device = torch.device("cuda", index)
        x = torch.randn(2, 3, 16, 16, device=device)
        w = torch.randn(4, 3, 3, 3, device=device)
        y = torch.nn.functional.conv2d(x, w).flatten(1)
        z = torch.softmax(y @ y.T, dim=1)
        torch.cuda.synchronize(device)
        if not torch.isfinite(z).all().item():
            return "non-finite results"
    except Exception as error:  # noqa: BLE001 - any failure means: do not use this GPU
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


def choose_device(requested: str = "auto", index: int = 0) -> DeviceChoice:
    """``auto``: CUDA when visible and its smoke test passes, else the CPU; ``cpu``; ``cuda``.

    ``index``: the GPU to test and hand out (a DDP process's ``LOCAL_RANK``).

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
    failure = cuda_smoke_test(index)
    if failure is None:
        name = torch.cuda.get_device_name(index)
        device = torch.device("cuda", index) if index else torch.device("cuda")
        return DeviceChoice(device, f"CUDA smoke test passed on {name}")
    if requested == "cuda":
        raise ValueError(f"device cuda requested but the GPU fails a smoke test ({failure}): "
                         "use auto or cpu")
    LOGGER.error("a GPU is visible but fails the CUDA smoke test (%s): running on the CPU", failure)
    return DeviceChoice(torch.device("cpu"), f"GPU unusable, CUDA smoke test failed: {failure}")


def resolve_device(device: str | torch.device) -> torch.device:
    """A ``torch.device`` as given (the caller chose it already); a choice (``auto``, ``cpu``,
    ``cuda``) through :func:`choose_device`."""
    if isinstance(device, torch.device):
        return device
    return choose_device(device).device


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters are on (the CPU for a model without any)."""
    return next(iter(model.parameters()), torch.empty(0)).device


def amp_dtype() -> torch.dtype:
    """The CUDA autocast type: bfloat16 where the GPU supports it, else float16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA (:func:`amp_dtype`) when ``enabled``; elsewhere a context that
    changes nothing (float32 as without it)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=amp_dtype())
    return torch.autocast("cpu", enabled=False)


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """Loss scaling for float16 autocast on CUDA; otherwise (bfloat16, the CPU, ``enabled``
    false) a disabled scaler whose ``scale``/``step``/``update`` are the plain backward and
    optimiser step."""
    on = enabled and device.type == "cuda" and amp_dtype() == torch.float16
    return torch.amp.GradScaler("cuda", enabled=on)
