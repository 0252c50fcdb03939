"""Where weights come from, offline, and how they are saved and loaded (safetensors).

Two kinds of weights:

* **Backbone initialisation for training** (ImageNet): :func:`resolve_init_file` looks, in this
  order, at (1) an explicit file (``model.pretrained_file`` / ``--config`` override), then (2)
  ``$RSNA_TIMM_WEIGHTS/{backbone}.{tag}.safetensors`` and ``{backbone}.safetensors``. The file
  goes through timm's ``pretrained_cfg_overlay=dict(file=...)`` so timm still adapts the first
  convolution to 1 input channel and drops the classifier. The Hugging Face hub is never asked:
  when nothing is found the error lists every place looked.
* **Trained weights** in a model folder (``fold_k/model.safetensors``): :func:`save_weights` /
  :func:`load_weights`. Loading strips DDP (``module.``) and ``torch.compile`` (``_orig_mod.``)
  prefixes and reports missing/unexpected keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)
ENV_DIR = "RSNA_TIMM_WEIGHTS"
_PREFIXES = ("module.", "_orig_mod.")


def create_backbone(name: str, init_file: str | os.PathLike | None = None) -> nn.Module:
    """A timm feature extractor (``num_classes=0``, ``in_chans=1``), never touching the network.

    Args:
        name: timm model name.
        init_file: local ImageNet weights (``.safetensors``/``.pth``/``.bin``); ``None`` = random.
    """
    import timm

    if init_file is None:
        return timm.create_model(name, pretrained=False, num_classes=0, in_chans=1)
    path = Path(init_file)
    if not path.is_file():
        msg = f"backbone weights file {path} does not exist; pass an existing local file"
        raise FileNotFoundError(msg)
    return timm.create_model(
        name, pretrained=True, num_classes=0, in_chans=1,
        pretrained_cfg_overlay=dict(file=str(path)),
    )


def candidate_init_files(backbone: str, tag: str | None) -> list[Path]:
    """The places :func:`resolve_init_file` looks in, after an explicit file."""
    root = os.environ.get(ENV_DIR)
    if not root:
        return []
    names = ([f"{backbone}.{tag}"] if tag else []) + [backbone]
    return [Path(root) / f"{n}{ext}" for n in names for ext in (".safetensors", ".pth", ".bin")]


def resolve_init_file(backbone: str, tag: str | None, explicit: str | os.PathLike | None,
                      required: bool) -> Path | None:
    """The backbone initialisation file, or ``None`` (random init) when not ``required``.

    Raises:
        FileNotFoundError: ``required`` and no file found; the message lists every path tried.
    """
    tried: list[Path] = []
    if explicit:
        path = Path(explicit)
        if path.is_file():
            return path
        tried.append(path)
    for path in candidate_init_files(backbone, tag):
        if path.is_file():
            return path
        tried.append(path)
    if required:
        places = "\n  ".join(map(str, tried)) or f"(nothing: set {ENV_DIR} or model.pretrained_file)"
        msg = (
            f"no local ImageNet weights for {backbone}; looked at:\n  {places}\n"
            f"download them once where there is internet (timm.create_model('{backbone}', "
            f"pretrained=True) then save_file(model.state_dict(), ...)) and point "
            f"model.pretrained_file or ${ENV_DIR} at them, or set model.pretrained=false"
        )
        raise FileNotFoundError(msg)
    return None


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP/compile wrappers' key prefixes (``module.``, ``_orig_mod.``)."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model``'s state (unwrapped, contiguous, CPU) as safetensors, atomically."""
    from safetensors.torch import save_file

    from rsna_lumbar.atomic import atomic_path

    state = strip_prefixes(model.state_dict())
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a safetensors (or ``weights_only`` torch) file into ``model``.

    Raises:
        FileNotFoundError: the file is absent.
        RuntimeError: ``strict`` and keys differ; the message names them.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"weights file {path} not found; is this a complete model folder (fold_k/model.safetensors)?"
        raise FileNotFoundError(msg)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = strip_prefixes(state)
    own = model.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and v.shape != own[k].shape]
    if shapes:
        msg = f"{path} does not fit the model (shapes differ: {shapes[:3]}); was it trained with another spec?"
        raise RuntimeError(msg)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        detail = f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        if strict:
            msg = f"{path} does not fit the model ({detail}); was it trained with another spec?"
            raise RuntimeError(msg)
        LOGGER.warning("%s: %s", path, detail)
    return model
