"""The 2.5D severity network: a timm backbone encodes every slice, a pooling head reads them all.

Shapes (``B`` samples, ``V`` views of the family, ``S`` slices, ``H × W`` pixels, ``D`` hidden):

* input of one family: ``x`` float ``(B, V, S, H, W)`` and ``mask`` bool ``(B, V)`` — ``False``
  where the study lacks the view (its pixels are ignored, never encoded);
* :class:`SliceEncoder`: ``(N, S, H, W) → (N, S, D)``, each slice a 1-channel image through the
  backbone (``num_classes=0`` → pooled features) and a linear projection;
* tokens: the ``V·S`` slice embeddings plus a learned view embedding and slice-position embedding;
* :class:`AttentionPool`: gated attention-MIL (Ilse et al. 2018) over the present tokens →
  ``(B, D)``; the ``gru`` pooling first runs a bidirectional GRU along each view's slices;
* head: dropout + linear → logits ``(B, 3)`` (Normal/Mild, Moderate, Severe); with
  ``head="ordinal"`` one score and two ordered cut-points (:mod:`rsna_lumbar.models.ordinal`)
  give the log-probabilities, which serve as logits.

:class:`LumbarNet` holds one such head per family, either each with its own encoder
(``shared=False``: one model per family) or all on one encoder (``shared=True``: one backbone,
one head per family). Which serves better is the ablation's question (docs/experiments/severity.md).
:func:`create_model` builds one from a registered spec name; a trained model folder's network
comes from its ``model.json`` (:func:`rsna_lumbar.models.folder.build_network`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from rsna_lumbar.models.ordinal import OrdinalClassifier
from rsna_lumbar.models.registry import ModelSpec, get_spec
from rsna_lumbar.models.weights import create_backbone


class SliceEncoder(nn.Module):
    """``(N, S, H, W) → (N, S, D)``: every slice through the timm backbone, then a projection."""

    def __init__(self, spec: ModelSpec, init_file=None):
        super().__init__()
        self.backbone = create_backbone(spec.backbone, init_file=init_file)
        self.project = nn.Sequential(
            nn.Linear(self.backbone.num_features, spec.hidden), nn.LayerNorm(spec.hidden)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, h, w = x.shape
        images = x.reshape(n * s, 1, h, w)
        if next(self.backbone.parameters()).is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.backbone(images)
        return self.project(features).reshape(n, s, -1)


class AttentionPool(nn.Module):
    """Gated attention pooling: ``(B, T, D)`` tokens and ``(B, T)`` bool mask → ``(B, D)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.value = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)  # softmax ignores a shared shift: a bias gets no gradient

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.score(torch.tanh(self.value(tokens)) * torch.sigmoid(self.gate(tokens)))
        logits = logits.squeeze(-1).float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0).to(tokens.dtype)  # all-masked → 0
        return torch.einsum("bt,btd->bd", weights, tokens)


class FamilyHead(nn.Module):
    """Pools one family's slice embeddings ``(B, V, S, D)`` with mask ``(B, V)`` → logits ``(B, 3)``."""

    def __init__(self, spec: ModelSpec, n_views: int):
        super().__init__()
        d = spec.hidden
        self.view_embedding = nn.Parameter(torch.zeros(n_views, 1, d))
        self.slice_embedding = nn.Parameter(torch.zeros(1, spec.slices, d))
        nn.init.normal_(self.view_embedding, std=0.02)
        nn.init.normal_(self.slice_embedding, std=0.02)
        self.gru = (
            nn.GRU(d, d // 2, batch_first=True, bidirectional=True)
            if spec.pooling == "gru" else None
        )
        self.pool = AttentionPool(d)
        self.classifier = (
            OrdinalClassifier(d, spec.dropout) if spec.head == "ordinal"
            else nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(d, 3))
        )

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, v, s, d = embeddings.shape
        tokens = embeddings + self.view_embedding + self.slice_embedding
        if self.gru is not None:
            tokens = self.gru(tokens.reshape(b * v, s, d))[0].reshape(b, v, s, d)
        token_mask = mask[:, :, None].expand(b, v, s).reshape(b, v * s)
        pooled = self.pool(tokens.reshape(b, v * s, d), token_mask)
        return self.classifier(pooled)


class LumbarNet(nn.Module):
    """Severity network over one or more condition families.

    ``forward(inputs)`` takes ``{family: (x (B_f, V_f, S, H, W), mask (B_f, V_f))}`` and returns
    ``{family: logits (B_f, 3)}``. With ``shared=True`` all families' present views go through
    the single encoder in one call.
    """

    def __init__(self, spec: ModelSpec, families, views, *, shared: bool = False, init_file=None):
        super().__init__()
        self.spec = spec
        self.families = tuple(families)
        self.views = {f: tuple(views[f]) for f in self.families}
        self.shared = shared
        if shared:
            self.encoder = SliceEncoder(spec, init_file)
        else:
            self.encoders = nn.ModuleDict({f: SliceEncoder(spec, init_file) for f in self.families})
        self.heads = nn.ModuleDict({f: FamilyHead(spec, len(self.views[f])) for f in self.families})

    def _encode(self, encoder: SliceEncoder, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode only present views: ``(B, V, S, H, W)`` → ``(B, V, S, D)`` (zeros where absent)."""
        b, v, s = x.shape[:3]
        flat_mask = mask.reshape(b * v)
        out = x.new_zeros(b * v, s, self.spec.hidden)
        if flat_mask.any():
            encoded = encoder(x.reshape(b * v, s, *x.shape[3:])[flat_mask])
            out = out.to(encoded.dtype)
            out[flat_mask] = encoded
        return out.reshape(b, v, s, -1)

    def forward(self, inputs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        unknown = set(inputs) - set(self.families)
        if unknown:
            msg = f"this network grades {self.families}, not {sorted(unknown)}"
            raise KeyError(msg)
        if not self.shared:
            return {
                f: self.heads[f](self._encode(self.encoders[f], x, m), m)
                for f, (x, m) in inputs.items()
            }
        # Shared encoder: one backbone call over every family's present views.
        order = list(inputs)
        stacked = [inputs[f][0].flatten(0, 1) for f in order]
        masks = [inputs[f][1].flatten() for f in order]
        encoded = self._encode(
            self.encoder, torch.cat(stacked)[:, None], torch.cat(masks)[:, None]
        ).squeeze(1)
        out, start = {}, 0
        for f, chunk in zip(order, stacked):
            x, m = inputs[f]
            part = encoded[start:start + len(chunk)].reshape(*m.shape, *encoded.shape[1:])
            start += len(chunk)
            out[f] = self.heads[f](part, m)
        return out


def create_model(spec_name: str, families, views, *, shared: bool = False, slices=None,
                 size=None, init_file=None, **overrides) -> LumbarNet:
    """Build the severity network of ``spec_name`` (see :class:`LumbarNet`).

    Args:
        spec_name: a registered name (:mod:`rsna_lumbar.models.registry`).
        families: family names the network grades, e.g. ``("spinal", "foraminal")``.
        views: family → tuple of view names it reads (e.g. ``{"spinal": ("sag_t2", "axial")}``).
        shared: one backbone with a head per family (``True``) or one network per family.
        slices, size: override the spec's defaults.
        init_file: local backbone weights for training initialisation (``weights.py``).
        overrides: other :class:`ModelSpec` fields (``hidden``, ``dropout``, ``pooling``,
            ``head``).
    """
    spec = get_spec(spec_name)
    changes = {k: v for k, v in dict(slices=slices, size=size, **overrides).items() if v is not None}
    spec = dataclasses.replace(spec, **changes)
    return LumbarNet(spec, families, views, shared=shared, init_file=init_file)
