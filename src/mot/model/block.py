"""The one MoT block (docs/design.md invariant 1): dense, MoT, leave-one-out, ablations and MoE
variants are all this class, configured by the tower map and the set of untied components."""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..config import ModelConfig
from .attention import AttentionContext, GlobalAttention
from .layers import SwiGLU, make_norm
from .moe import ExpertChoiceFFN, TokenChoiceFFN
from .towers import PerTower


def make_ffn(config: ModelConfig, group: str) -> nn.Module:
    """The FFN of one weight group: SwiGLU, or an MoE if the group is listed in ``moe.towers``."""
    dim, hidden, moe = config.d_model, config.ffn_dim, config.moe
    if group not in moe.towers:
        return SwiGLU(dim, hidden)
    if moe.routing == "expert_choice":
        return ExpertChoiceFFN(dim, hidden, moe.num_experts, moe.capacity_factor)
    return TokenChoiceFFN(dim, hidden, moe.num_experts)


class MoTBlock(nn.Module):
    """``post`` (paper eq. 1-2): ``h = x + Norm(Attn(x))``, ``y = h + Norm(FFN(h))``.
    ``pre`` (Llama): ``h = x + Attn(Norm(x))``, ``y = h + FFN(Norm(h))``.
    Input and output are the residual stream as one part ``[n_t, D]`` per tower.
    """

    def __init__(self, config: ModelConfig, layer_index: int = 0):
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        norm_groups = config.groups("norms")
        self.attention = GlobalAttention(config, layer_index)
        self.attention_norm = PerTower(norm_groups, lambda _: make_norm(config.norm_type, config.d_model,
                                                                        config.norm_eps))
        self.ffn = PerTower(config.groups("ffn"), lambda group: make_ffn(config, group))
        self.ffn_norm = PerTower(norm_groups, lambda _: make_norm(config.norm_type, config.d_model,
                                                                  config.norm_eps))

    def reset_parameters(self, std: float, residual_std: float) -> None:
        """Normal(0, std) weights, unit norms; the projections that write into the residual stream
        (attention output, FFN down) Normal(0, residual_std)."""
        self.attention.reset_parameters(std, residual_std)
        self.attention_norm.reset_parameters()
        self.ffn.reset_parameters(std, residual_std)
        self.ffn_norm.reset_parameters()

    def redraw_output_weights(self, residual_std: float) -> None:
        """Draw the attention's and the SwiGLU FFNs' output weights anew (see ``MoTModel.reset_parameters``)."""
        self.attention.redraw_output_weights(residual_std)
        for ffn in self.ffn.towers.values():
            if isinstance(ffn, SwiGLU):  # an MoE's experts were always drawn once
                ffn.redraw_output_weights(residual_std)

    def forward(self, parts: List[torch.Tensor], ctx: AttentionContext) -> List[torch.Tensor]:
        if self.pre_norm:
            attended = self.attention(self.attention_norm(parts), ctx)
            h = [x + a for x, a in zip(parts, attended)]
            return [x + f for x, f in zip(h, self.ffn(self.ffn_norm(h)))]
        attended = self.attention_norm(self.attention(parts, ctx))
        h = [x + a for x, a in zip(parts, attended)]
        return [x + f for x, f in zip(h, self.ffn_norm(self.ffn(h)))]
