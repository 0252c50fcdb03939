"""Named severity-model specs (timm-style registry).

A :class:`ModelSpec` fixes what a name means: the timm backbone, the default number of slices
and crop size, how slices are pooled, and the head width. Configs refer to specs by name
(``model.spec: resnet18_25d``); :func:`rsna_lumbar.models.network.create_model` builds the
network of a name, and :func:`list_models` is what ``rsna-lumbar models list`` prints. An
unknown name raises ``KeyError`` naming the close matches.

Specs are level- and side-agnostic: a spec grades one (condition, level) sample from its views,
right-side samples arrive mirrored (crops contract), so one network serves all ten foraminal or
subarticular targets.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Literal

Pooling = Literal["attention", "gru"]
Head = Literal["softmax", "ordinal"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a model name means.

    Attributes:
        name: registry key.
        backbone: timm model name; each slice is encoded as a 1-channel image.
        slices: default slices per view (``S``); the crop cache's middle ``S`` are used.
        size: default input size in pixels (crops are resized to ``size × size``).
        pooling: ``attention`` (gated attention-MIL over all slices of all views) or ``gru``
            (a bidirectional GRU over each view's slices, then attention).
        hidden: width of the pooled embedding.
        dropout: before the classifier.
        head: ``softmax`` (a linear layer, three logits) or ``ordinal`` (one severity score
            and two ordered cut-points, :mod:`rsna_lumbar.models.ordinal`).
        pretrained_tag: the timm ImageNet tag to initialise from *for training only*, loaded
            from a local file (``models/weights.py``); never used at inference.
        note: one line for ``models list``.
    """

    name: str
    backbone: str
    slices: int = 5
    size: int = 64
    pooling: Pooling = "attention"
    hidden: int = 128
    dropout: float = 0.1
    head: Head = "softmax"
    pretrained_tag: str | None = None
    note: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry; a duplicate name is a programming error."""
    if spec.name in _REGISTRY:
        msg = f"model spec {spec.name!r} is registered twice"
        raise ValueError(msg)
    _REGISTRY[spec.name] = spec
    return spec


for _spec in (
    ModelSpec("tiny", "test_resnet", slices=3, size=32, hidden=32, dropout=0.0,
              note="timm test_resnet (0.4 M params), for CPU tests only"),
    ModelSpec("tiny_gru", "test_resnet", slices=3, size=32, hidden=32, dropout=0.0,
              pooling="gru", note="tiny with a bi-GRU over slices"),
    ModelSpec("tiny_gn", "test_efficientnet_gn", slices=3, size=32, hidden=32, dropout=0.0,
              note="tiny with GroupNorm (no batch statistics): DDP equals one process exactly"),
    ModelSpec("resnet10t_25d", "resnet10t", slices=5, size=64, hidden=128,
              pretrained_tag="c3_in1k", note="CPU-sized: resnet10t, 5×64 px"),
    ModelSpec("resnet18_25d", "resnet18", slices=5, size=64, hidden=128,
              pretrained_tag="a1_in1k", note="default: resnet18, 5×64 px, attention-MIL"),
    ModelSpec("resnet18_gru", "resnet18", slices=5, size=64, hidden=128, pooling="gru",
              pretrained_tag="a1_in1k", note="resnet18 + bi-GRU over slices + attention"),
    ModelSpec("efficientnet_b0_25d", "efficientnet_b0", slices=5, size=64, hidden=128,
              pretrained_tag="ra_in1k", note="CPU-friendly efficientnet_b0, 5×64 px"),
    ModelSpec("convnext_nano_25d", "convnext_nano", slices=5, size=96, hidden=192,
              pretrained_tag="in12k_ft_in1k", note="convnext_nano, 5×96 px"),
    ModelSpec("efficientnetv2_s_gru", "tf_efficientnetv2_s", slices=7, size=128, hidden=256,
              pooling="gru", pretrained_tag="in21k_ft_in1k",
              note="GPU: EfficientNetV2-S, 7×128 px, bi-GRU (1st-place style)"),
    ModelSpec("convnext_small_25d", "convnext_small", slices=5, size=128, hidden=256,
              pooling="gru", pretrained_tag="in12k_ft_in1k",
              note="GPU: ConvNeXt-S, 5×128 px, bi-GRU + attention"),
):
    register(_spec)


def list_models() -> list[str]:
    """Registered spec names, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec called ``name``.

    Raises:
        KeyError: for an unknown name, listing close matches and how to see all names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        msg = f"unknown model spec {name!r}; {hint}'rsna-lumbar models list' shows all"
        raise KeyError(msg) from None
