"""Global self-attention with per-tower projections (the paper's eq. 3).

Q, K, V and O projections (fused QKV) and the per-head QK-norms belong to the token's tower;
the softmax runs over the whole interleaved sequence, every modality together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from .layers import apply_rotary, make_norm
from .routing import RoutingPlan, to_sequence_order, to_tower_order
from .towers import PerTower


@dataclass
class AttentionContext:
    """What every layer's attention shares within one forward pass, built once per batch."""

    plan: RoutingPlan
    cos: torch.Tensor  # [B, 1, L, head_dim]
    sin: torch.Tensor
    backend: Any  # an object from attention_backends
    mask: Any  # the backend's prepared mask


class GlobalAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
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

    def project(self, x: torch.Tensor, plan: RoutingPlan):
        """Tower-sorted ``x [N, D]`` -> q ``[N, H, hd]``, k and v ``[N, Hkv, hd]``, still tower-sorted."""
        n = x.shape[0]
        q, k, v = self.qkv(x, plan).split(
            [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1)
        q = q.reshape(n, self.heads, self.head_dim)
        k = k.reshape(n, self.kv_heads, self.head_dim)
        v = v.reshape(n, self.kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q, plan), self.k_norm(k, plan)
        return q, k, v

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """Tower-sorted ``x [N, D]`` -> attention output ``[N, D]`` in the same order."""
        plan = ctx.plan
        batch, length = plan.batch_size, plan.seq_len
        q, k, v = self.project(x, plan)

        def heads_first(t: torch.Tensor) -> torch.Tensor:  # tower-sorted [N, h, hd] -> [B, h, L, hd]
            return to_sequence_order(t, plan).view(batch, length, *t.shape[1:]).transpose(1, 2)

        q = apply_rotary(heads_first(q), ctx.cos, ctx.sin)
        k = apply_rotary(heads_first(k), ctx.cos, ctx.sin)
        attended = ctx.backend.attend(q, k, heads_first(v), ctx.mask)  # [B, H, L, hd]
        attended = attended.transpose(1, 2).reshape(batch * length, self.heads * self.head_dim)
        return self.out(to_tower_order(attended, plan), plan)
