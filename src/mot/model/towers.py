"""Per-tower modules: one copy of a module per weight group, applied to that group's tokens.

A component's weight groups are ``ModelConfig.groups(component)``: one per tower when the component
is untied, else the single ``shared`` group. The residual stream is a list with one part per
tower (see ``routing.py``), so applying a component is one call per part.

Serving has a second way (the paper's section 6.3): pad every tower's part to the largest one and
compute all towers' linear maps in one batched matmul, trading the padding's wasted compute for one
kernel per map. :meth:`MoTModel.padded_towers` turns it on; the loop above is its reference and
the outputs agree (tests/model/test_towers.py).
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SwiGLU


class PerTower(nn.Module):
    """Holds ``make(group)`` once per group under the group's name (``...qkv.towers.image.weight``)."""

    def __init__(self, groups: List[str], make: Callable[[str], nn.Module]):
        super().__init__()
        self.towers = nn.ModuleDict({name: make(name) for name in groups})
        #: pad the parts to the largest and run the towers as one batched matmul (inference only)
        self.padded = False
        self._stacked: dict = {}  # weights stacked per tower for the padded way, while unchanged

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
        distributed collectives stay in step (docs/design.md invariant 4). Without gradients
        (generation, evaluation) a tower with no tokens is skipped: the part counts are host
        integers, so this reads nothing from the device.
        """
        if self.shared:
            module = next(iter(self.towers.values()))
            if len(parts) > 1 and not getattr(module, "token_wise", True):
                # A shared module that mixes tokens (Expert-Choice routing) must see them all at once.
                return list(module(torch.cat(list(parts))).split([p.shape[0] for p in parts]))
            return [module(part) for part in parts]
        if self.padded:
            return self._padded_forward(parts)
        if not torch.is_grad_enabled():  # inference: a tower with no tokens has nothing to compute
            return [module(part) if part.shape[0] else _empty_output(module, part)
                    for module, part in zip(self.towers.values(), parts)]
        return [module(part) for module, part in zip(self.towers.values(), parts)]

    def _padded_forward(self, parts: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Every part ``[n_t, ...]`` padded with zero rows to the largest ``n``, the towers' linear maps
        as batched matmuls over ``[towers, n, d]``, the padding cut off again. Modules other than
        linear maps and SwiGLU FFNs (norms, MoE) run tower by tower on the padded parts."""
        counts = [part.shape[0] for part in parts]
        largest = max(counts)
        x = torch.stack([torch.cat([part, part.new_zeros(largest - count, *part.shape[1:])])
                         for part, count in zip(parts, counts)])
        modules = list(self.towers.values())
        if all(isinstance(module, nn.Linear) for module in modules):
            y = self._batched(x, "weight")
        elif all(isinstance(module, SwiGLU) for module in modules):
            y = self._batched(F.silu(self._batched(x, "gate.weight")) * self._batched(x, "up.weight"), "down.weight")
        else:
            y = torch.stack([module(rows) for module, rows in zip(modules, x)])
        return [y[tower, :count] for tower, count in enumerate(counts)]

    def _batched(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """``x [towers, n, in]`` through each tower's weight ``name`` (``[out, in]``): ``[towers, n, out]``."""
        weights = [module.get_parameter(name) for module in self.towers.values()]
        key = tuple((w.data_ptr(), w._version) for w in weights)
        if self._stacked.get(name, (None,))[0] != key:  # stacked once, again only when a weight changes
            self._stacked[name] = (key, torch.stack([w.detach() for w in weights]).transpose(1, 2))
        return torch.bmm(x, self._stacked[name][1])


def _empty_output(module: nn.Module, part: torch.Tensor) -> torch.Tensor:
    """What ``module`` gives for a part of no tokens: a linear map changes the width, every other
    per-tower module (norms, FFNs, MoE) keeps the part's shape."""
    return part.new_empty(0, module.out_features) if isinstance(module, nn.Linear) else part
