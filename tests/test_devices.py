"""Device choice (CUDA only after a real kernel launch works on it) and mixed precision, which
changes nothing on the CPU."""

import pytest
import torch

from rsna_lumbar.devices import (
    autocast, choose_device, cuda_smoke_test, grad_scaler, model_device, resolve_device,
)


def test_cpu_is_chosen_when_asked_or_when_no_gpu_is_visible(monkeypatch):
    assert choose_device("cpu").device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    choice = choose_device("auto")
    assert choice.device == torch.device("cpu") and choice.note == "no GPU visible"
    with pytest.raises(ValueError, match="no GPU is visible: use auto or cpu"):
        choose_device("cuda")
    with pytest.raises(ValueError, match="use one of auto, cpu, cuda"):
        choose_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA driver")
def test_a_visible_gpu_that_cannot_run_kernels_falls_back_to_the_cpu(monkeypatch):
    """torch says a GPU is there (as Kaggle's cu128 torch does on a P100) but nothing runs on it:
    here every CUDA call fails for real, because this machine has no driver."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cuda_smoke_test() is not None
    choice = choose_device("auto")
    assert choice.device == torch.device("cpu")
    assert choice.note.startswith("GPU unusable, CUDA smoke test failed: ")
    with pytest.raises(ValueError, match="fails a smoke test"):
        choose_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_working_gpu_passes_the_smoke_test():
    assert cuda_smoke_test() is None
    assert choose_device("auto").device.type == "cuda"


def test_on_the_cpu_autocast_and_the_scaler_change_nothing():
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu and resolve_device(cpu) is cpu
    layer = torch.nn.Linear(4, 3)
    assert model_device(layer) == cpu and model_device(torch.nn.ReLU()) == cpu
    x = torch.randn(5, 4)
    with autocast(cpu):
        y = layer(x)
    assert y.dtype == torch.float32 and torch.equal(y, layer(x))
    scaler = grad_scaler(cpu)
    assert not scaler.is_enabled()
    loss = y.sum()
    assert scaler.scale(loss) is loss
