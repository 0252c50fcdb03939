"""``rsna-lumbar weights``: ImageNet weights pulled into the local cache from a real local file
(no network here), found there by training without RSNA_TIMM_WEIGHTS, another architecture's
refused, offline a one-line error that contacts nothing; inference never reads the cache."""

from __future__ import annotations

import shutil
import socket

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import rsna_lumbar
from rsna_lumbar import cli
from rsna_lumbar.models.weights import create_backbone, resolve_init_file

NAME = "mobilenetv3_small_050"  # small, and timm builds it without the network


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh home (so the default cache ~/.cache/rsna-lumbar/timm is empty), no
    RSNA_TIMM_WEIGHTS, and 'weights' among the CLI's commands."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RSNA_TIMM_WEIGHTS", raising=False)
    if "weights" not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "weights"))
    return tmp_path / "home"


def _saved(tmp_path, name: str, seed: int = 0):
    """timm's ``name`` (random weights, classifier included) saved as safetensors."""
    torch.manual_seed(seed)
    state = timm.create_model(name, pretrained=False).state_dict()
    file = tmp_path / f"{name}-download.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(file))
    return file, state


def test_pulled_weights_are_found_by_training_and_loaded(home, tmp_path, capsys):
    file, state = _saved(tmp_path, NAME)
    assert cli.main(["weights", "pull", NAME, "--from", str(file)]) == 0
    cached = home / ".cache" / "rsna-lumbar" / "timm" / f"{NAME}.safetensors"
    assert str(cached) in capsys.readouterr().out
    # no RSNA_TIMM_WEIGHTS: the default cache is where training looks
    assert resolve_init_file(NAME, "lamb_in1k", None, required=True) == cached
    kept = load_file(str(cached))
    assert "classifier.weight" not in kept and set(kept) < set(state)
    backbone = create_backbone(NAME, cached)
    loaded = backbone.state_dict()
    stem = "conv_stem.weight"  # timm sums the RGB stem into the one input channel
    torch.testing.assert_close(loaded[stem], state[stem].sum(dim=1, keepdim=True))
    same = [k for k in loaded if k != stem]
    assert len(same) > 50 and all(torch.equal(loaded[k], state[k]) for k in same)
    # a cached name is not fetched again, even offline; a torch checkpoint and timm's Hugging
    # Face folder layout are sources too
    assert cli.main(["weights", "pull", NAME]) == 0
    torch.save({"state_dict": state}, tmp_path / "checkpoint.pth")
    (tmp_path / "hf").mkdir()
    shutil.copy(file, tmp_path / "hf" / "model.safetensors")
    for source in (tmp_path / "checkpoint.pth", tmp_path / "hf"):
        assert cli.main(["weights", "pull", f"{NAME}.lamb_in1k", "--from", str(source)]) == 0
        tagged = cached.with_name(f"{NAME}.lamb_in1k.safetensors")
        assert resolve_init_file(NAME, "lamb_in1k", None, required=True) == tagged
        assert load_file(str(tagged)).keys() == kept.keys()


def test_another_architectures_weights_are_refused(home, tmp_path, capsys):
    file, _ = _saved(tmp_path, NAME)
    assert cli.main(["weights", "pull", "lcnet_050", "--from", str(file)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{file} does not hold timm lcnet_050 weights (shapes differ" in err
    assert not (home / ".cache" / "rsna-lumbar" / "timm" / "lcnet_050.safetensors").exists()
    assert cli.main(["weights", "pull", "resnett18", "--from", str(file)]) == 1
    assert "unknown timm model 'resnett18'; did you mean resnet18" in capsys.readouterr().err


def test_pull_offline_is_one_line_naming_the_file_and_contacts_nothing(home, monkeypatch, capsys):
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setattr(rsna_lumbar, "HF_HUB_OFFLINE_FROM_USER", "1")  # as tests/conftest.py sets
    calls = []

    def connect(sock, address):
        calls.append(address)
        raise OSError("the test allows no connection")

    monkeypatch.setattr(socket.socket, "connect", connect)
    assert cli.main(["weights", "pull", "resnet18"]) == 1
    err = capsys.readouterr().err.strip()
    target = home / ".cache" / "rsna-lumbar" / "timm" / "resnet18.safetensors"
    assert err == (
        "rsna-lumbar weights: error: no network (HF_HUB_OFFLINE=1): download timm's "
        "'resnet18.a1_in1k' weights (https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/"
        "model.safetensors) on a machine with internet and run 'rsna-lumbar weights pull "
        f"resnet18 --from FILE', or put them at {target}"
    )
    assert calls == [] and not target.exists()


def test_list_shows_the_cache_and_what_the_packaged_configs_need(home, tmp_path, capsys):
    file, _ = _saved(tmp_path, "resnet18")
    assert cli.main(["weights", "pull", "resnet18", "--from", str(file)]) == 0
    capsys.readouterr()
    assert cli.main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"cache {home / '.cache' / 'rsna-lumbar' / 'timm'}: 1 file(s)"
    assert lines[1].split()[0] == "resnet18.safetensors"
    default = next(line.split() for line in lines if line.strip().startswith("configs/default"))
    assert default == ["configs/default.yaml", "resnet18_25d", "resnet18.a1_in1k",
                       "resnet18.safetensors"]  # fmt: skip
    missing = next(line for line in lines if "efficientnet_b0_25d" in line)
    assert missing.endswith("no: rsna-lumbar weights pull efficientnet_b0")


def test_a_model_trained_from_imagenet_weights_predicts_without_the_cache(home, tmp_path,
                                                                          monkeypatch):
    """model.pretrained=true reads the cache while training; loading the trained folder builds
    every network with pretrained=False and reads nothing from the (now removed) cache."""
    from crop_factory import make_crop_cache

    from rsna_lumbar.models import load_model_folder
    from rsna_lumbar.training.config import load_config
    from rsna_lumbar.training.loop import train_cv

    file, _ = _saved(tmp_path, "test_resnet")  # the tiny spec's backbone
    assert cli.main(["weights", "pull", "test_resnet", "--from", str(file)]) == 0
    crops, train_csv, folds_csv = make_crop_cache(tmp_path, n_studies=8, slices=2, size=16, k=2)
    config = load_config("tiny", ["train.epochs=1", "train.folds=[0]", "model.pretrained=true",
                                  "train.threads=1"])  # fmt: skip
    out = tmp_path / "model"
    assert train_cv(crops, folds_csv, train_csv, config, out) is not None
    shutil.rmtree(home / ".cache")
    built = []
    create = timm.create_model

    def recording(name, pretrained=False, **kwargs):
        built.append(pretrained)
        return create(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", recording)
    ensemble = load_model_folder(out)
    study = sorted(crops.glob("*.npz"))[0]
    probs, mask = ensemble.predict_study(study)
    assert mask.any() and probs.shape == (25, 3)
    assert built and not any(built)
