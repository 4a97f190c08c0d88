"""The paper's Algorithm 1 as a plain loop: the readable reference the fast path is tested against.

It reads the weights of a :class:`~mot.model.transformer.MoTModel` but routes tokens the way the
paper writes it: for each tower, the boolean index set ``I_t`` of its tokens, ``x[I_t]`` through the
tower's weights, results written back with ``out[I_t] = ...``. Attention is the dense-mask
reference. (The paper loops over modalities; with a tower map, modalities of one tower share
weights, so looping over towers is the same computation and also gives an MoE tower the same set
of tokens as the fast path.) This is slow on purpose; do not use it for training.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .attention_backends import ReferenceAttention
from .layers import apply_rotary, rotary_cos_sin
from .masks import MaskSpec, positions_from_documents
from .towers import PerTower

#: ``route(per_tower, x, tower_masks) -> y``: apply each tower's module to its tokens.
Router = Callable[[PerTower, torch.Tensor, dict], torch.Tensor]


def route_by_boolean_index(per_tower: PerTower, x: torch.Tensor, tower_masks: dict) -> torch.Tensor:
    """Algorithm 1, lines 3-5 and 14-16: ``X_t = x[I_t]``, then ``Y[I_t] = f_t(X_t)``."""
    if per_tower.shared:  # a tied component: one module for every token, all at once
        y = per_tower.for_tower("")(x.flatten(0, 1))
        return y.view(*x.shape[:2], *y.shape[1:])
    out = None
    for tower, mask in tower_masks.items():
        y = per_tower.for_tower(tower)(x[mask])
        if out is None:
            out = y.new_zeros(*mask.shape, *y.shape[1:])  # y.dtype: autocast may change it
        out[mask] = y
    return out


def reference_logits(model: nn.Module, tokens: torch.Tensor, modality_ids: torch.Tensor, *,
                     positions: Optional[torch.Tensor] = None, document_ids: Optional[torch.Tensor] = None,
                     span_ids: Optional[torch.Tensor] = None, attention=None,
                     route: Router = route_by_boolean_index) -> torch.Tensor:
    """Logits ``[B, L, vocab]`` computed by Algorithm 1 with ``model``'s weights.

    ``attention`` is a backend from ``attention_backends`` (default: the dense-mask reference);
    ``route`` replaces the boolean-index grouping (benchmarks compare other routers with it).
    """
    config = model.config
    batch, length = tokens.shape
    tower_index = config.modality_tower_index
    tower_masks = {tower: torch.zeros_like(tokens, dtype=torch.bool) for tower in config.tower_names}
    for modality, index in enumerate(tower_index):
        tower_masks[config.tower_names[index]] |= modality_ids == modality
    if positions is None:
        positions = (positions_from_documents(document_ids) if document_ids is not None
                     else torch.arange(length).expand(batch, length))
    attention = attention or ReferenceAttention()
    mask = attention.prepare(MaskSpec(document_ids, span_ids), batch, length, length,
                             torch.float32, tokens.device)
    x = model.embed(tokens)  # [B, L, D]
    cos, sin = rotary_cos_sin(positions, config.head_dim, config.rope_theta, x.dtype)
    for block in model.blocks:
        attn = block.attention

        def attention_sublayer(h: torch.Tensor) -> torch.Tensor:
            qkv = route(attn.qkv, h, tower_masks)  # Algorithm 1 line 6
            q, k, v = qkv.split([attn.heads * attn.head_dim, attn.kv_heads * attn.head_dim,
                                 attn.kv_heads * attn.head_dim], dim=-1)
            q = q.reshape(batch, length, attn.heads, attn.head_dim)
            k = k.reshape(batch, length, attn.kv_heads, attn.head_dim)
            v = v.reshape(batch, length, attn.kv_heads, attn.head_dim)
            if attn.q_norm is not None:
                q, k = route(attn.q_norm, q, tower_masks), route(attn.k_norm, k, tower_masks)
            q = apply_rotary(q.transpose(1, 2), cos, sin)
            k = apply_rotary(k.transpose(1, 2), cos, sin)
            a = attention.attend(q, k, v.transpose(1, 2), mask)  # lines 8-9: one global softmax
            a = a.transpose(1, 2).reshape(batch, length, -1)
            return route(attn.out, a, tower_masks)  # line 11

        if block.pre_norm:
            h = x + attention_sublayer(route(block.attention_norm, x, tower_masks))
            x = h + route(block.ffn, route(block.ffn_norm, h, tower_masks), tower_masks)
        else:
            h = x + route(block.attention_norm, attention_sublayer(x), tower_masks)  # line 12
            x = h + route(block.ffn_norm, route(block.ffn, h, tower_masks), tower_masks)  # lines 13-14
    x = route(model.final_norm, x, tower_masks)
    return route(model.head, x, tower_masks) if isinstance(model.head, PerTower) else model.head(x)
