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
* level context (``level_context=True``, :class:`LevelContext`): between pooling and head, the
  pooled slots of one level — the canal, both foramina and both recesses, ``(5, D)`` per level
  — attend to each other, with a level and a condition embedding added, so every head sees the
  whole level and a slot whose own views are missing (a recess no axial slice covers) is graded
  from the others instead of left to the prior. With ``context_detached=True`` the block reads
  the slots' features without training the encoders that made them: its output is the pooled
  slot plus a correction computed from the detached slots, so each family's encoder learns from
  its own loss only, as in the per-family model, and the context is learnt on top.

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
from rsna_lumbar.vocabulary import CONDITIONS, LEVELS


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

    def pooled(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, V, S, D)`` slice embeddings, ``(B, V)`` mask → ``(B, D)`` (zeros where no view)."""
        b, v, s, d = embeddings.shape
        tokens = embeddings + self.view_embedding + self.slice_embedding
        if self.gru is not None:
            tokens = self.gru(tokens.reshape(b * v, s, d))[0].reshape(b, v, s, d)
        token_mask = mask[:, :, None].expand(b, v, s).reshape(b, v * s)
        return self.pool(tokens.reshape(b, v * s, d), token_mask)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(embeddings, mask))


class LevelContext(nn.Module):
    """The five conditions of a level attend to each other: one pre-norm attention + MLP block.

    ``forward(pooled, present, conditions)``: ``pooled`` float ``(B, L, C, D)`` — a level's
    ``C`` pooled slots (conditions in :data:`~rsna_lumbar.vocabulary.CONDITIONS` order, their
    indices ``conditions``, ``L = 5`` levels L1/L2 … L5/S1), ``present`` bool ``(B, L, C)``
    — whether the slot had any view → ``(B, L, C, D)``. A slot without views enters as a learned
    ``absent`` token and is a query only (no slot attends to it), so its output is read from the
    level's other slots; a level without any view gives outputs nobody grades.
    """

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.level_embedding = nn.Parameter(torch.zeros(len(LEVELS), 1, dim))
        self.condition_embedding = nn.Parameter(torch.zeros(len(CONDITIONS), dim))
        self.absent = nn.Parameter(torch.zeros(dim))
        for parameter in (self.level_embedding, self.condition_embedding, self.absent):
            nn.init.normal_(parameter, std=0.02)
        self.norm_attend = nn.LayerNorm(dim)
        self.attend = nn.MultiheadAttention(dim, 4 if dim % 4 == 0 else 1, dropout=dropout,
                                            batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * dim, dim))

    def forward(self, pooled: torch.Tensor, present: torch.Tensor, conditions) -> torch.Tensor:
        b, n_levels, c, d = pooled.shape
        tokens = torch.where(present[..., None], pooled, self.absent.to(pooled.dtype))
        tokens = tokens + self.level_embedding + self.condition_embedding[list(conditions)]
        tokens = tokens.reshape(b * n_levels, c, d)
        ignore = ~present.reshape(b * n_levels, c)
        ignore = ignore & ~ignore.all(dim=1, keepdim=True)  # an empty level: attend anywhere
        query = self.norm_attend(tokens)
        mixed, _ = self.attend(query, query, query, key_padding_mask=ignore, need_weights=False)
        tokens = tokens + mixed
        tokens = tokens + self.mlp(self.norm_mlp(tokens))
        return tokens.reshape(b, n_levels, c, d)


class LumbarNet(nn.Module):
    """Severity network over one or more condition families.

    ``forward(inputs)`` takes ``{family: (x (B_f, V_f, S, H, W), mask (B_f, V_f))}`` and returns
    ``{family: logits (B_f, 3)}``. With ``shared=True`` all families' present views go through
    the single encoder in one call. With ``level_context=True`` the inputs are whole studies —
    ``B_f = B · N_f`` in :func:`rsna_lumbar.models.dataset.family_slots` order (conditions ×
    levels) — and :class:`LevelContext` mixes each level's slots before the heads; a slot
    without views then still gets logits from its level
    (:func:`rsna_lumbar.models.dataset.graded_slots` says which are graded).
    """

    def __init__(self, spec: ModelSpec, families, views, *, shared: bool = False,
                 level_context: bool = False, context_detached: bool = False,
                 init_file=None):  # fmt: skip
        super().__init__()
        self.spec = spec
        self.families = tuple(families)
        self.views = {f: tuple(views[f]) for f in self.families}
        self.shared = shared
        self.level_context = level_context
        self.context_detached = context_detached
        if shared:
            self.encoder = SliceEncoder(spec, init_file)
        else:
            self.encoders = nn.ModuleDict({f: SliceEncoder(spec, init_file) for f in self.families})
        self.heads = nn.ModuleDict({f: FamilyHead(spec, len(self.views[f])) for f in self.families})
        # built last, so that the encoders and heads start from the same draws either way
        self.context = LevelContext(spec.hidden, spec.dropout) if level_context else None

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
        embeddings = self._embeddings(inputs)
        pooled = {f: self.heads[f].pooled(embeddings[f], inputs[f][1]) for f in inputs}
        if self.context is not None:
            pooled = self._in_context(pooled, {f: m.any(dim=1) for f, (_, m) in inputs.items()})
        return {f: self.heads[f].classifier(pooled[f]) for f in inputs}

    def _embeddings(self, inputs) -> dict[str, torch.Tensor]:
        """Slice embeddings ``{family: (B_f, V_f, S, D)}`` (zeros for absent views)."""
        if not self.shared:
            return {f: self._encode(self.encoders[f], x, m) for f, (x, m) in inputs.items()}
        # Shared encoder: one backbone call over every family's present views.
        order = list(inputs)
        stacked = [inputs[f][0].flatten(0, 1) for f in order]
        masks = [inputs[f][1].flatten() for f in order]
        encoded = self._encode(
            self.encoder, torch.cat(stacked)[:, None], torch.cat(masks)[:, None]
        ).squeeze(1)
        out, start = {}, 0
        for f, chunk in zip(order, stacked):
            m = inputs[f][1]
            out[f] = encoded[start:start + len(chunk)].reshape(*m.shape, *encoded.shape[1:])
            start += len(chunk)
        return out

    def _in_context(self, pooled: dict[str, torch.Tensor], present: dict[str, torch.Tensor]):
        """Regroup ``{family: (B·N_f, D)}`` by level, mix each level's slots, split back."""
        n_levels = len(LEVELS)
        families = [f for f in dict.fromkeys(c.family.value for c in CONDITIONS) if f in pooled]
        conditions = [i for i, c in enumerate(CONDITIONS) if c.family.value in pooled]
        width = {f: sum(c.family.value == f for c in CONDITIONS) for f in families}
        first = pooled[families[0]]
        batch = first.shape[0] // (width[families[0]] * n_levels)
        by_level = torch.cat([pooled[f].reshape(batch, width[f], n_levels, -1) for f in families],
                             dim=1).transpose(1, 2)  # (B, L, C, D)
        shown = torch.cat([present[f].reshape(batch, width[f], n_levels) for f in families],
                          dim=1).transpose(1, 2)  # (B, L, C)
        if self.context_detached:  # the pooled slot + a correction read from detached slots
            mixed = by_level + (self.context(by_level.detach(), shown, conditions) - by_level.detach())
        else:
            mixed = self.context(by_level, shown, conditions)
        mixed = mixed.transpose(1, 2)  # (B, C, L, D)
        out, start = {}, 0
        for f in families:
            out[f] = mixed[:, start:start + width[f]].reshape(batch * width[f] * n_levels, -1)
            start += width[f]
        return out


def create_model(spec_name: str, families, views, *, shared: bool = False,
                 level_context: bool = False, context_detached: bool = False, slices=None,
                 size=None, init_file=None, **overrides) -> LumbarNet:
    """Build the severity network of ``spec_name`` (see :class:`LumbarNet`).

    Args:
        spec_name: a registered name (:mod:`rsna_lumbar.models.registry`).
        families: family names the network grades, e.g. ``("spinal", "foraminal")``.
        views: family → tuple of view names it reads (e.g. ``{"spinal": ("sag_t2", "axial")}``).
        shared: one backbone with a head per family (``True``) or one network per family.
        level_context: mix the conditions of each level before the heads (:class:`LevelContext`).
        context_detached: the context does not train the encoders (:class:`LumbarNet`).
        slices, size: override the spec's defaults.
        init_file: local backbone weights for training initialisation (``weights.py``).
        overrides: other :class:`ModelSpec` fields (``hidden``, ``dropout``, ``pooling``,
            ``head``).
    """
    spec = get_spec(spec_name)
    changes = {k: v for k, v in dict(slices=slices, size=size, **overrides).items() if v is not None}
    spec = dataclasses.replace(spec, **changes)
    return LumbarNet(spec, families, views, shared=shared, level_context=level_context,
                     context_detached=context_detached,
                     init_file=init_file)
