"""Device choice: CUDA only after a real kernel launch works on it."""

import pytest
import torch

from rsna_lumbar.models.device import choose_device, cuda_smoke_test


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
