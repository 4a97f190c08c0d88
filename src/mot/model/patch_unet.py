"""The paper's U-Net patch encoder and decoder (Transfusion, appendix A.2): the down blocks turn
each ``p x p`` window of the noisy latent into one vector of the model width; the up blocks turn
the transformer's output back into a latent-sized noise prediction, with skip connections from
the down blocks at every resolution, as in a U-Net (``unet_skips``; without them everything the
decoder knows has passed through the transformer). Every residual block is conditioned on the
diffusion timestep (its embedding, projected, is added inside the block).

Levels: level 0 works at the latent resolution with ``unet_channels[0]`` channels; each next level
halves the resolution, so ``log2(patch_size)`` downsamplings leave one position per patch.
"""

from __future__ import annotations

import math
from typing import Any, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LatentConfig


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv; plus the projected timestep; GroupNorm, SiLU, 3x3 conv; residual."""

    def __init__(self, channels_in: int, channels_out: int, time_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(channels_in), nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.time = nn.Linear(time_dim, channels_out)
        self.norm2, self.conv2 = _group_norm(channels_out), nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def reset_parameters(self, std: float) -> None:
        """Normal(0, std) timestep projection; the convolutions, norms and biases keep PyTorch's defaults."""
        nn.init.normal_(self.time.weight, std=std)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(time))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class PatchUNet(nn.Module):
    """``encode``: ``[N, C, H, W]`` -> ``[N, P, D]``; ``decode``: ``[N, P, D]`` -> ``[N, C, H, W]``."""

    def __init__(self, config: LatentConfig, dim: int):
        super().__init__()
        widths, blocks = list(config.unet_channels), config.unet_res_blocks
        self.conv_in = nn.Conv2d(config.channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.ModuleList(ResBlock(w, w, dim) for _ in range(blocks)) for w in widths)
        self.downsample = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.to_model = nn.Linear(widths[-1], dim)
        self.from_model = nn.Linear(dim, widths[-1])
        # with skips, each up level sees its input concatenated with the down level's output at that resolution
        self.skips = config.unet_skips
        first = 2 if self.skips else 1
        self.up = nn.ModuleList(
            nn.ModuleList(ResBlock(first * w if i == 0 else w, w, dim) for i in range(blocks)) for w in widths)
        self.upsample = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in zip(widths, widths[1:]))
        self.norm_out = _group_norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], config.channels, 3, padding=1)

    def reset_parameters(self, std: float) -> None:
        """Normal(0, std) weights of the linear layers, in module order; the convolutions, norms and
        biases keep PyTorch's default initialisation."""
        for level in self.down:
            for block in level:
                block.reset_parameters(std)
        nn.init.normal_(self.to_model.weight, std=std)
        nn.init.normal_(self.from_model.weight, std=std)
        for level in self.up:
            for block in level:
                block.reset_parameters(std)

    def encode(self, latents: torch.Tensor, time: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        x = self.conv_in(latents)
        skips: List[torch.Tensor] = []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                x = block(x, time)
            skips.append(x)
            if level < len(self.downsample):
                x = self.downsample[level](x)
        grid = x.shape[-2:]
        vectors = self.to_model(x.flatten(2).transpose(1, 2))  # [N, P, D], patches row-major
        return vectors, (skips, grid)

    def decode(self, hidden: torch.Tensor, state: Any, time: torch.Tensor) -> torch.Tensor:
        skips, (height, width) = state
        x = self.from_model(hidden).transpose(1, 2).reshape(hidden.shape[0], self.from_model.out_features, height, width)
        for level in reversed(range(len(self.up))):
            if level < len(self.upsample):
                x = self.upsample[level](F.interpolate(x, scale_factor=2.0, mode="nearest"))
            if self.skips:
                x = torch.cat([x, skips[level]], dim=1)
            for block in self.up[level]:
                x = block(x, time)
        return self.conv_out(F.silu(self.norm_out(x)))
