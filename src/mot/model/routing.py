"""The routing plan: which token goes to which tower, computed once per batch on the host.

MoT's per-tower weights would normally need a boolean mask per modality in every layer, and on a
GPU each ``x[mask]`` is a host sync (DESIGN.md invariant 3). Instead the residual stream is kept
*sorted by tower* for the whole stack: tokens are permuted once with a stable sort of their tower
ids, every per-tower op then works on contiguous slices of known length, and only attention (which
needs the original sequence order) un-permutes its inputs and re-permutes its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch


@dataclass(frozen=True)
class RoutingPlan:
    """How the ``B*L`` flattened tokens of a batch are grouped by tower.

    ``order[i]`` is the flat index (``b * L + l``) of the i-th token in tower-sorted order and
    ``inverse`` undoes it. ``tower_counts[t]`` is the number of tokens of tower t: a plain Python
    tuple, known on the host, so slicing by it never waits for the device.
    """

    order: torch.Tensor  # [B*L] int64
    inverse: torch.Tensor  # [B*L] int64
    tower_counts: Tuple[int, ...]
    batch_size: int
    seq_len: int

    @property
    def num_tokens(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def is_identity(self) -> bool:
        """All tokens in one tower (a dense model, or a one-modality batch): sorting changes nothing."""
        return max(self.tower_counts) == self.num_tokens

    def to(self, device: torch.device | str) -> "RoutingPlan":
        return RoutingPlan(self.order.to(device, non_blocking=True),
                           self.inverse.to(device, non_blocking=True),
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
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    counts = torch.bincount(tower_ids, minlength=max(modality_tower_index) + 1)
    return RoutingPlan(order, inverse, tuple(int(c) for c in counts.cpu().tolist()), batch_size, seq_len)


class _PermuteRows(torch.autograd.Function):
    """``x[index]`` whose backward is the inverse gather, not a scatter-add (index is a permutation)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def to_tower_order(x: torch.Tensor, plan: RoutingPlan) -> torch.Tensor:
    """``[B*L, ...]`` in sequence order -> the same rows in tower-sorted order."""
    return x if plan.is_identity else _PermuteRows.apply(x, plan.order, plan.inverse)


def to_sequence_order(x: torch.Tensor, plan: RoutingPlan) -> torch.Tensor:
    """``[B*L, ...]`` in tower-sorted order -> the same rows in sequence order."""
    return x if plan.is_identity else _PermuteRows.apply(x, plan.inverse, plan.order)
