"""The continuous image path: noisy VAE latents in, one vector per patch; hidden states out, a
noise prediction per latent (the Transfusion setting; ``ModelConfig.latent``).

Two patch encoders/decoders, both shared by every tower (the paper keeps them fixed across
architectures): :class:`LinearPatches` (one matrix each way) and the U-Net of
:mod:`.patch_unet`. :class:`LatentPath` adds the timestep embedding to every patch vector.

Patches are numbered row-major over the patch grid; that is the order of the image's positions in
the sequence. Shapes: latents ``[N, C, H, W]``; patch vectors ``[N, P, D]`` with
``P = (H / p) * (W / p)``.
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import nn

from ..config import LatentConfig
from .timestep import TimestepEmbedding


def patchify(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, (H/p)(W/p), C p p]``, patches row-major."""
    n, c, h, w = latents.shape
    grid = latents.reshape(n, c, h // patch, patch, w // patch, patch)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(n, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(patches: torch.Tensor, patch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`patchify`."""
    n = patches.shape[0]
    grid = patches.reshape(n, height // patch, width // patch, channels, patch, patch)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(n, channels, height, width)


class LinearPatches(nn.Module):
    """One linear map from a flattened patch to the model width, one back."""

    def __init__(self, config: LatentConfig, dim: int):
        super().__init__()
        self.patch, self.channels = config.patch_size, config.channels
        size = config.channels * config.patch_size ** 2
        self.encoder = nn.Linear(size, dim)
        self.decoder = nn.Linear(dim, size)

    def reset_parameters(self, std: float) -> None:
        """Normal(0, std) weights; the biases keep PyTorch's default initialisation."""
        nn.init.normal_(self.encoder.weight, std=std)
        nn.init.normal_(self.decoder.weight, std=std)

    def encode(self, latents: torch.Tensor, time: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        """``latents [N, C, H, W]`` -> patch vectors ``[N, P, D]`` and what :meth:`decode` needs."""
        return self.encoder(patchify(latents, self.patch)), latents.shape[-2:]

    def decode(self, hidden: torch.Tensor, state: Any, time: torch.Tensor) -> torch.Tensor:
        """``hidden [N, P, D]`` -> ``[N, C, H, W]``."""
        height, width = state
        return unpatchify(self.decoder(hidden), self.patch, self.channels, height, width)


class LatentPath(nn.Module):
    """Timestep embedding + patch encoder/decoder of the continuous modality."""

    def __init__(self, config: LatentConfig, dim: int):
        super().__init__()
        from .patch_unet import PatchUNet  # it builds on patchify above

        self.config = config
        self.timestep_embedding = TimestepEmbedding(config.timestep_features, dim)
        self.patches = LinearPatches(config, dim) if config.encoder == "linear" else PatchUNet(config, dim)

    def reset_parameters(self, std: float) -> None:
        """Normal(0, std) weights of the linear layers; biases and convolutions keep PyTorch's default
        initialisation."""
        self.timestep_embedding.reset_parameters(std)
        self.patches.reset_parameters(std)

    def patches_per_image(self, height: int, width: int) -> int:
        return (height // self.config.patch_size) * (width // self.config.patch_size)

    def encode(self, latents: torch.Tensor, timesteps: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        """Noisy ``latents [N, C, H, W]`` at ``timesteps [N]`` -> ``[N, P, D]`` and the decoder's state."""
        time = self.timestep_embedding(timesteps)  # [N, D]
        vectors, state = self.patches.encode(latents, time)
        return vectors + time[:, None, :], (state, time)

    def decode(self, hidden: torch.Tensor, state: Any) -> torch.Tensor:
        """Final hidden states of the patches ``[N, P, D]`` -> predicted noise ``[N, C, H, W]``."""
        inner, time = state
        return self.patches.decode(hidden, inner, time)
