"""Per-tower modules: one copy of a module per weight group, applied to that group's tokens.

A component's weight groups are ``ModelConfig.groups(component)``: one per tower when the component
is untied, else the single ``shared`` group. The input is the tower-sorted residual stream, so each
tower's tokens are one contiguous slice whose length is in the routing plan.
"""

from __future__ import annotations

from typing import Callable, List

import torch
from torch import nn

from .routing import RoutingPlan


class PerTower(nn.Module):
    """Holds ``make(group)`` once per group under the group's name (``...qkv.image.weight``)."""

    def __init__(self, groups: List[str], make: Callable[[str], nn.Module]):
        super().__init__()
        self.towers = nn.ModuleDict({name: make(name) for name in groups})

    @property
    def shared(self) -> bool:
        return len(self.towers) == 1

    def for_tower(self, tower: str) -> nn.Module:
        """The module that tower ``tower`` uses (the shared one when the component is tied)."""
        return next(iter(self.towers.values())) if self.shared else self.towers[tower]

    def forward(self, x: torch.Tensor, plan: RoutingPlan) -> torch.Tensor:
        """``x [B*L, ...]`` in tower-sorted order -> each slice through its own tower's module."""
        if self.shared:
            return next(iter(self.towers.values()))(x)
        # Every tower runs, even on an empty slice, so its weights get zero gradients (not None)
        # and distributed collectives stay in step (DESIGN.md invariant 4).
        slices = x.split(plan.tower_counts)
        return torch.cat([module(part) for module, part in zip(self.towers.values(), slices)])
