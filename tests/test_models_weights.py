"""Offline weights: a local file through timm's pretrained_cfg_overlay, safetensors round trip."""

import os

import pytest
import timm
import torch
from safetensors.torch import save_file

from rsna_lumbar.models.network import create_model
from rsna_lumbar.models.weights import (
    create_backbone,
    load_weights,
    resolve_init_file,
    save_weights,
    strip_prefixes,
)


def test_backbone_loads_a_local_file_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    source = timm.create_model("test_resnet", pretrained=False)  # 3 channels, with classifier
    file = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(file))
    backbone = create_backbone("test_resnet", init_file=file)
    loaded = backbone.state_dict()
    # timm adapted the RGB stem to one channel by summing over the input channels …
    stem = "conv1.0.weight"
    torch.testing.assert_close(loaded[stem], source.state_dict()[stem].sum(dim=1, keepdim=True))
    # … and kept every other backbone weight as saved.
    same = [k for k in loaded if k != stem and k in source.state_dict()]
    assert len(same) > 10
    for key in same:
        torch.testing.assert_close(loaded[key], source.state_dict()[key])
    assert backbone.num_features == source.num_features


def test_resolution_order_and_error_lists_places(tmp_path, monkeypatch):
    monkeypatch.setenv("RSNA_TIMM_WEIGHTS", str(tmp_path))
    assert resolve_init_file("resnet18", "a1_in1k", None, required=False) is None
    with pytest.raises(FileNotFoundError) as error:
        resolve_init_file("resnet18", "a1_in1k", tmp_path / "nope.safetensors", required=True)
    message = str(error.value)
    assert "nope.safetensors" in message and "resnet18.a1_in1k.safetensors" in message
    assert "model.pretrained=false" in message
    (tmp_path / "resnet18.safetensors").write_bytes(b"x")
    assert resolve_init_file("resnet18", "a1_in1k", None, True) == tmp_path / "resnet18.safetensors"
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"x")
    assert resolve_init_file("resnet18", "a1_in1k", explicit, True) == explicit


def test_save_load_round_trip_strips_ddp_prefixes(tmp_path):
    views = {"spinal": ("sag_t2", "axial")}
    a = create_model("tiny", ["spinal"], views)
    b = create_model("tiny", ["spinal"], views)
    wrapped = torch.nn.Module()
    wrapped.module = a  # what DistributedDataParallel's state_dict looks like
    assert all(k.startswith("module.") for k in wrapped.state_dict())
    save_weights(wrapped, tmp_path / "m.safetensors", {"fold": 0})
    load_weights(b, tmp_path / "m.safetensors")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb)
    assert strip_prefixes({"module._orig_mod.x": 1}) == {"x": 1}
    other = create_model("tiny", ["spinal"], views, hidden=16)
    with pytest.raises(RuntimeError, match="another spec"):
        load_weights(other, tmp_path / "m.safetensors")
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
