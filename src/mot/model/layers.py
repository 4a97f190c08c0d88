"""Small building blocks: normalisation, rotary embeddings, the SwiGLU feed-forward network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_norm(norm_type: str, dim: int, eps: float) -> nn.Module:
    """RMSNorm (Llama, Chameleon) or LayerNorm with a bias."""
    if norm_type == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if norm_type == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"norm_type={norm_type!r}: expected 'rmsnorm' or 'layernorm'")


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``, no biases (Llama)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def reset_parameters(self, std: float, residual_std: float) -> None:
        """Normal(0, std) weights; ``down``, which writes into the residual stream, Normal(0, residual_std)."""
        nn.init.normal_(self.gate.weight, std=std)
        nn.init.normal_(self.up.weight, std=std)
        self.redraw_output_weights(residual_std)

    def redraw_output_weights(self, residual_std: float) -> None:
        """Draw ``down`` anew from Normal(0, residual_std) (see ``MoTModel.reset_parameters`` for why twice)."""
        nn.init.normal_(self.down.weight, std=residual_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[B, 1, L, head_dim]`` for integer ``positions [B, L]`` (Llama's half-split layout)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device,
                                            dtype=torch.float32) / head_dim)
    angles = positions.float()[..., None] * inv_freq  # [B, L, head_dim/2]
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # [B, 1, L, head_dim]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, L, head_dim]`` by the angles in cos/sin."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin
