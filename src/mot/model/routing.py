"""The routing plan: which token goes to which tower, computed once per batch on the host.

MoT's per-tower weights would normally need a boolean mask per modality in every layer, and on a
GPU each ``x[mask]`` is a host sync (docs/design.md invariant 3). Instead the model keeps its residual
stream *split by tower* for the whole stack: one part per tower, each part holding that tower's
tokens in sequence order. Every per-tower op then runs on a whole part, and only attention
(which needs the interleaved sequence) scatters its inputs into sequence order and gathers its
output back. The indices for that are computed once per batch, from data the loader has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch


@dataclass(frozen=True)
class RoutingPlan:
    """How the ``B*L`` flattened tokens of a batch are grouped by tower.

    ``order`` lists the flat indices (``b * L + l``) of the tokens tower by tower (a stable sort
    of their tower ids); ``tower_counts[t]`` is the number of tokens of tower t, a plain Python
    tuple known on the host, so cutting the stream into parts never waits for the device.
    """

    order: torch.Tensor  # [B*L] int64
    tower_counts: Tuple[int, ...]
    batch_size: int
    seq_len: int

    @property
    def single_tower(self) -> bool:
        """A dense model: one tower holds every token, there is nothing to reorder."""
        return len(self.tower_counts) == 1

    @property
    def tower_indices(self) -> Tuple[torch.Tensor, ...]:
        """The flat indices of each tower's tokens (views into ``order``)."""
        return self.order.split(self.tower_counts)

    def to(self, device: torch.device | str) -> "RoutingPlan":
        return RoutingPlan(self.order.to(device, non_blocking=True), self.tower_counts,
                           self.batch_size, self.seq_len)


def build_routing_plan(modality_ids: torch.Tensor, modality_tower_index: Sequence[int]) -> RoutingPlan:
    """Build the plan from ``modality_ids [B, L]``; call it on the host (the loader does).

    ``modality_tower_index[m]`` is the tower index of modality m (``ModelConfig.modality_tower_index``).
    Modality ids must already be valid (see ``mot.model.inputs``).
    """
    if modality_ids.dim() != 2:
        raise ValueError(f"modality_ids must have shape [batch, seq_len], got {tuple(modality_ids.shape)}")
    batch_size, seq_len = modality_ids.shape
    lookup = torch.as_tensor(list(modality_tower_index), dtype=torch.int64, device=modality_ids.device)
    tower_ids = lookup[modality_ids.reshape(-1).long()]
    order = torch.sort(tower_ids, stable=True).indices
    counts = torch.bincount(tower_ids, minlength=max(modality_tower_index) + 1)
    return RoutingPlan(order, tuple(int(c) for c in counts.cpu().tolist()), batch_size, seq_len)


class _GatherTowers(torch.autograd.Function):
    """Sequence-order rows -> one part per tower; the backward writes each part's gradient back
    into its rows (no scatter-add: every row belongs to exactly one tower)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, indices: Tuple[torch.Tensor, ...]):
        ctx.indices, ctx.shape = indices, x.shape
        return tuple(x.index_select(0, index) for index in indices)

    @staticmethod
    def backward(ctx, *grads):
        reference = next(g for g in grads if g is not None)
        out = reference.new_empty(ctx.shape) if all(g is not None for g in grads) else reference.new_zeros(ctx.shape)
        for index, grad in zip(ctx.indices, grads):
            if grad is not None:
                out.index_copy_(0, index, grad)
        return out, None


class _ScatterTowers(torch.autograd.Function):
    """One part per tower -> rows in sequence order; the adjoint of :class:`_GatherTowers`."""

    @staticmethod
    def forward(ctx, indices: Tuple[torch.Tensor, ...], *parts: torch.Tensor):
        ctx.indices = indices
        out = parts[0].new_empty(sum(p.shape[0] for p in parts), *parts[0].shape[1:])
        for index, part in zip(indices, parts):
            out.index_copy_(0, index, part)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (None, *(grad.index_select(0, index) for index in ctx.indices))


def split_by_tower(x: torch.Tensor, plan: RoutingPlan) -> List[torch.Tensor]:
    """``x [B*L, ...]`` in sequence order -> one part per tower, ``[tower_counts[t], ...]`` each."""
    if plan.single_tower:
        return [x]
    return list(_GatherTowers.apply(x, plan.tower_indices))


def merge_towers(parts: Sequence[torch.Tensor], plan: RoutingPlan) -> torch.Tensor:
    """The inverse of :func:`split_by_tower`: the parts' rows back in sequence order ``[B*L, ...]``."""
    if plan.single_tower:
        return parts[0]
    # Empty parts still go through the scatter: an absent tower's weights then get zero
    # gradients rather than None (docs/design.md invariant 4).
    return _ScatterTowers.apply(plan.tower_indices, *parts)
