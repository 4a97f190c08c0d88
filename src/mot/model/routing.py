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
    of their tower ids); ``inverse_order`` is its inverse permutation: where each token sits among
    the parts laid end to end. ``tower_counts[t]`` is the number of tokens of tower t, a plain
    Python tuple known on the host, so cutting the stream into parts never waits for the device.
    """

    order: torch.Tensor  # [B*L] int64
    inverse_order: torch.Tensor  # [B*L] int64
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
        return RoutingPlan(self.order.to(device, non_blocking=True), self.inverse_order.to(device, non_blocking=True),
                           self.tower_counts, self.batch_size, self.seq_len)


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
    return RoutingPlan(order, torch.argsort(order), tuple(int(c) for c in counts.cpu().tolist()), batch_size, seq_len)


# Neither Function mutates a tensor: torch 2.11's compiler routes the gradient of an
# autograd.Function whose forward writes in place into its own output to the wrong slot
# (pytorch/pytorch#180642). With the scatter written as ``out.index_copy_`` per tower, compiled
# MoT trained on torch 2.11 gave every weight below the last merge a zero gradient (measured on
# an H200, docs/benchmarks.md); eager and torch 2.13 were right. A gather from the parts laid end
# to end (``inverse_order``) moves the same rows with no write into an existing tensor.


def _sequence_order(parts: Sequence[torch.Tensor], inverse_order: torch.Tensor) -> torch.Tensor:
    """Parts (tower by tower) -> their rows in sequence order: one gather, nothing written in place."""
    return torch.cat(parts).index_select(0, inverse_order)


class _GatherTowers(torch.autograd.Function):
    """Sequence-order rows -> one part per tower; the backward gathers each part's gradient back
    into its rows (no scatter-add: every row belongs to exactly one tower)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, indices: Tuple[torch.Tensor, ...], inverse_order: torch.Tensor):
        ctx.indices, ctx.inverse_order = indices, inverse_order
        return tuple(x.index_select(0, index) for index in indices)

    @staticmethod
    def backward(ctx, *grads):
        reference = next(g for g in grads if g is not None)
        grads = [reference.new_zeros(index.shape[0], *reference.shape[1:]) if grad is None else grad
                 for index, grad in zip(ctx.indices, grads)]
        return _sequence_order(grads, ctx.inverse_order), None, None


class _ScatterTowers(torch.autograd.Function):
    """One part per tower -> rows in sequence order; the adjoint of :class:`_GatherTowers`."""

    @staticmethod
    def forward(ctx, indices: Tuple[torch.Tensor, ...], inverse_order: torch.Tensor, *parts: torch.Tensor):
        ctx.indices = indices
        return _sequence_order(parts, inverse_order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (None, None, *(grad.index_select(0, index) for index in ctx.indices))


def split_by_tower(x: torch.Tensor, plan: RoutingPlan) -> List[torch.Tensor]:
    """``x [B*L, ...]`` in sequence order -> one part per tower, ``[tower_counts[t], ...]`` each."""
    if plan.single_tower:
        return [x]
    return list(_GatherTowers.apply(x, plan.tower_indices, plan.inverse_order))


def merge_towers(parts: Sequence[torch.Tensor], plan: RoutingPlan) -> torch.Tensor:
    """The inverse of :func:`split_by_tower`: the parts' rows back in sequence order ``[B*L, ...]``."""
    if plan.single_tower:
        return parts[0]
    # Empty parts still go through the scatter: an absent tower's weights then get zero
    # gradients rather than None (docs/design.md invariant 4).
    return _ScatterTowers.apply(plan.tower_indices, plan.inverse_order, *parts)
