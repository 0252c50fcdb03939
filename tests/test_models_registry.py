"""Model-spec registry: listing, lookup, close-match errors, the factory, the CLI listing."""

import pytest
import torch

from rsna_lumbar.cli import main
from rsna_lumbar.models import get_spec, list_models
from rsna_lumbar.models.network import create_model


def test_list_contains_the_cpu_and_gpu_specs():
    names = list_models()
    assert names == sorted(names)
    for name in ("tiny", "tiny_gn", "resnet18_25d", "efficientnet_b0_25d", "efficientnetv2_s_gru"):
        assert name in names
    assert get_spec("resnet18_25d").backbone == "resnet18"


def test_unknown_name_names_close_matches():
    with pytest.raises(KeyError) as error:
        get_spec("resnet18_2d5")
    message = error.value.args[0]
    assert "'resnet18_25d'" in message and "models list" in message


def test_factory_applies_overrides():
    model = create_model("tiny", ["foraminal"], {"foraminal": ("sag_t1",)}, slices=2, size=16,
                         hidden=24)
    assert model.spec.slices == 2 and model.spec.hidden == 24
    logits = model({"foraminal": (torch.randn(3, 1, 2, 16, 16), torch.ones(3, 1, dtype=torch.bool))})
    assert logits["foraminal"].shape == (3, 3)


def test_cli_lists_models(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "resnet18_25d" in out and "test_resnet" in out
