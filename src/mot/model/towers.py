"""Per-tower modules: one copy of a module per weight group, applied to that group's tokens.

A component's weight groups are ``ModelConfig.groups(component)``: one per tower when the component
is untied, else the single ``shared`` group. The residual stream is a list with one part per
tower (see ``routing.py``), so applying a component is one call per part.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import torch
from torch import nn


class PerTower(nn.Module):
    """Holds ``make(group)`` once per group under the group's name (``...qkv.towers.image.weight``)."""

    def __init__(self, groups: List[str], make: Callable[[str], nn.Module]):
        super().__init__()
        self.towers = nn.ModuleDict({name: make(name) for name in groups})

    @property
    def shared(self) -> bool:
        return len(self.towers) == 1

    def for_tower(self, tower: str) -> nn.Module:
        """The module that tower ``tower`` uses (the shared one when the component is tied)."""
        return next(iter(self.towers.values())) if self.shared else self.towers[tower]

    def reset_parameters(self, *args: float) -> None:
        """Reset every group's module, each with ``module.reset_parameters(*args)``, in group order."""
        for module in self.towers.values():
            module.reset_parameters(*args)

    def forward(self, parts: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """One part per tower (in ``ModelConfig.tower_names`` order) -> each through its module.

        Every tower runs, even on an empty part, so its weights get zero gradients (not None) and
        distributed collectives stay in step (docs/design.md invariant 4).
        """
        if self.shared:
            module = next(iter(self.towers.values()))
            if len(parts) > 1 and not getattr(module, "token_wise", True):
                # A shared module that mixes tokens (Expert-Choice routing) must see them all at once.
                return list(module(torch.cat(list(parts))).split([p.shape[0] for p in parts]))
            return [module(part) for part in parts]
        return [module(part) for module, part in zip(self.towers.values(), parts)]
