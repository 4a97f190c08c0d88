"""Global self-attention with per-tower projections (the paper's eq. 3).

Q, K, V and O projections (fused QKV) and the per-head QK-norms belong to the token's tower;
the softmax runs over the whole interleaved sequence, every modality together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
from torch import nn

from ..config import ModelConfig
from .kv_cache import KVCache
from .layers import apply_rotary, make_norm
from .routing import RoutingPlan, merge_towers, split_by_tower
from .towers import PerTower


@dataclass
class AttentionContext:
    """What every layer's attention shares within one forward pass, built once per batch."""

    plan: RoutingPlan
    cos: torch.Tensor  # [B, 1, L, head_dim]
    sin: torch.Tensor
    backend: Any  # an object from attention_backends
    mask: Any  # the backend's prepared mask
    #: generation only: keys and values of earlier positions (see ``kv_cache``)
    cache: Optional[KVCache] = None


class GlobalAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int = 0):
        super().__init__()
        self.layer_index = layer_index  # its slot in a KV cache
        dim, heads, kv_heads, head_dim = config.d_model, config.n_heads, config.kv_heads, config.head_dim
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        groups = config.groups("attention")
        self.qkv = PerTower(groups, lambda _: nn.Linear(dim, (heads + 2 * kv_heads) * head_dim, bias=False))
        self.out = PerTower(groups, lambda _: nn.Linear(heads * head_dim, dim, bias=False))
        self.q_norm = self.k_norm = None
        if config.qk_norm:
            norm_groups = config.groups("norms")
            self.q_norm = PerTower(norm_groups, lambda _: make_norm(config.norm_type, head_dim, config.norm_eps))
            self.k_norm = PerTower(norm_groups, lambda _: make_norm(config.norm_type, head_dim, config.norm_eps))

    def reset_parameters(self, std: float, residual_std: float) -> None:
        """Normal(0, std) QKV weights; the output projection, which writes into the residual stream,
        Normal(0, residual_std); unit QK-norms."""
        for qkv in self.qkv.towers.values():
            nn.init.normal_(qkv.weight, std=std)
        self.redraw_output_weights(residual_std)
        if self.q_norm is not None:
            self.q_norm.reset_parameters()
            self.k_norm.reset_parameters()

    def redraw_output_weights(self, residual_std: float) -> None:
        """Draw the output projection anew from Normal(0, residual_std) (see ``MoTModel.reset_parameters``
        for why twice)."""
        for out in self.out.towers.values():
            nn.init.normal_(out.weight, std=residual_std)

    def forward(self, parts: List[torch.Tensor], ctx: AttentionContext) -> List[torch.Tensor]:
        """One part ``[n_t, D]`` per tower -> the attention output for each part, same shapes."""
        plan = ctx.plan
        batch, length = plan.batch_size, plan.seq_len
        qkv = self.qkv(parts)  # Algorithm 1 line 6, tower by tower
        sizes = [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim]
        q, k, v = zip(*(part.split(sizes, dim=-1) for part in qkv))
        q = [part.reshape(-1, self.heads, self.head_dim) for part in q]
        k = [part.reshape(-1, self.kv_heads, self.head_dim) for part in k]
        v = [part.reshape(-1, self.kv_heads, self.head_dim) for part in v]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)

        def heads_first(parts: List[torch.Tensor]) -> torch.Tensor:  # parts -> [B, h, L, hd]
            merged = merge_towers(parts, plan)
            return merged.view(batch, length, *merged.shape[1:]).transpose(1, 2)

        query = apply_rotary(heads_first(q), ctx.cos, ctx.sin)
        key, value = apply_rotary(heads_first(k), ctx.cos, ctx.sin), heads_first(v)
        if ctx.cache is not None:  # earlier positions' keys and values come first
            key, value = ctx.cache.extend(self.layer_index, key, value)
        attended = ctx.backend.attend(query, key, value, ctx.mask)  # lines 8-9: [B, H, L, hd]
        attended = attended.transpose(1, 2).reshape(batch * length, self.heads * self.head_dim)
        return self.out(split_by_tower(attended, plan))  # line 11
