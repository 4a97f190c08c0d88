"""The diffusion timestep as a vector: sinusoidal features, then a small MLP (as in DDPM / DiT)."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_features(timesteps: torch.Tensor, width: int, max_period: float = 10_000.0) -> torch.Tensor:
    """``timesteps [N]`` (integers or floats) -> ``[N, width]`` fp32: cosines then sines of
    ``t * f_i`` for ``width/2`` frequencies ``f_i`` spaced geometrically from 1 to ``1/max_period``."""
    half = width // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                                  device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * frequencies[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TimestepEmbedding(nn.Module):
    """``timesteps [N]`` -> ``[N, dim]``: sinusoidal features, Linear, SiLU, Linear."""

    def __init__(self, features: int, dim: int):
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def reset_parameters(self, std: float) -> None:
        """Normal(0, std) weights; the biases keep PyTorch's default initialisation."""
        nn.init.normal_(self.mlp[0].weight, std=std)
        nn.init.normal_(self.mlp[2].weight, std=std)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_features(timesteps, self.features)
        return self.mlp(features.to(self.mlp[0].weight.dtype))
