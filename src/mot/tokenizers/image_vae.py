"""Continuous image tokenizer for the Transfusion setting: a small KL-regularised autoencoder
(the "KL-f8" shape of latent diffusion, scaled down). 32x32x3 images -> 4x4x4 latents
(8x spatial downsampling, 4 channels); the diffusion model works on these latents.

Loss: per-pixel MSE + ``kl_weight`` x per-element KL(q(z|x) || N(0, I)), both averaged (not
summed). The default ``kl_weight = 1e-4`` is small enough that reconstructions stay sharp and
large enough that the posterior stays a smooth, bounded cloud around the origin (without it the
means drift to arbitrary scales and the variances to zero, and diffusion on such latents is
ill-conditioned). There is no perceptual or adversarial loss: no pretrained network exists
offline, and on 32x32 images MSE alone is adequate.

Scaling: the trained latents do not have unit variance. After training,
``config.scaling_factor = 1 / std`` of posterior samples over the training images is stored in
the config (like Stable Diffusion's 0.18215); :meth:`ImageVAE.encode` returns latents multiplied
by it and :meth:`ImageVAE.decode` divides it out, so the diffusion model sees ~unit variance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, check_number
from .image_common import (check_architecture, conv_decoder, conv_encoder, images_to_tensor, reconstruction_metrics,
                           train_loop, training_setup)
from .saved import SavedTokenizer, config_from_dict, config_to_dict

KIND = "image_vae"


@dataclass
class ImageVAEConfig:
    """Architecture of :class:`ImageVAE` plus its latent ``scaling_factor`` (everything
    ``config.json`` records). The default four ``channel_mult`` levels downsample 8x (32 -> 4)."""

    image_size: int = 32
    width: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    res_blocks: int = 1
    latent_channels: int = 4
    scaling_factor: float = 1.0

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        check_architecture(self)
        channels = self.latent_channels
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError(f"latent_channels={self.latent_channels!r}: must be a positive integer")
        check_number("scaling_factor", self.scaling_factor, "must be a positive finite number", lambda v: v > 0)

    @property
    def latent_size(self) -> int:
        """Side of the latent grid (4 for 32x32 images and four levels)."""
        return self.image_size // 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, KIND)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageVAEConfig":
        return config_from_dict(cls, data, KIND)


class ImageVAE(SavedTokenizer, nn.Module):
    """Encoder -> (mean, logvar) -> sample -> decoder. Images in the convention of
    :mod:`.image_common`; latents ``[B, latent_channels, latent_size, latent_size]``."""

    kind = KIND
    config_class = ImageVAEConfig

    def __init__(self, config: ImageVAEConfig) -> None:
        super().__init__()
        self.config = config
        shape = (config.width, config.channel_mult, config.res_blocks)
        self.encoder = conv_encoder(*shape, 2 * config.latent_channels)  # mean and logvar
        self.decoder = conv_decoder(*shape, config.latent_channels)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``float [B, 3, S, S]`` in ``[-1, 1]`` -> (mean, logvar), each ``[B, C, s, s]``, unscaled."""
        mean, logvar = self.encoder(images).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # keeps exp(logvar) finite early in training

    @torch.no_grad()
    def encode(self, images: torch.Tensor | np.ndarray, sample: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``uint8 [B, S, S, 3]`` or ``float [B, 3, S, S]`` in ``[-1, 1]`` -> scaled latents
        ``float [B, C, s, s]``: the posterior mean, or with ``sample=True`` a draw from the
        posterior using ``generator`` (on the model's device), times ``config.scaling_factor``."""
        x = images_to_tensor(images, self.config.image_size).to(self.device)
        mean, logvar = self.posterior(x)
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            mean = mean + noise * (0.5 * logvar).exp()
        return mean * self.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``[B, C, s, s]`` -> images ``float [B, 3, S, S]`` in ``[-1, 1]``."""
        shape = self.config.latent_shape
        if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
            got = latents.dtype if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise TypeError(f"latents must be a float tensor; got {got}")
        if latents.dim() != 4 or tuple(latents.shape[1:]) != shape:
            raise ValueError(f"latents must have shape [B, {', '.join(map(str, shape))}]; "
                             f"got {list(latents.shape)}")
        z = latents.to(self.device, torch.float32) / self.config.scaling_factor
        return self.decoder(z).clamp(-1, 1)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over elements of KL(N(mean, exp(logvar)) || N(0, 1))."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


@torch.no_grad()
def _posterior_samples_std(model: ImageVAE, images: torch.Tensor, generator: torch.Generator,
                           batch_size: int = 256) -> float:
    samples = []
    for start in range(0, images.shape[0], batch_size):
        mean, logvar = model.posterior(images[start:start + batch_size])
        samples.append(mean + torch.randn(mean.shape, generator=generator) * (0.5 * logvar).exp())
    return torch.cat(samples).std().item()


@torch.no_grad()
def evaluate_image_vae(model: ImageVAE, images: torch.Tensor | np.ndarray,
                       batch_size: int = 256) -> dict[str, float]:
    """Reconstruction MSE and PSNR (pixels in ``[0, 1]``, decoded from the posterior mean), the
    std and mean of the scaled latents (std ~1 on data like the training data), and the KL term."""
    x = images_to_tensor(images, model.config.image_size)
    latents, reconstructions, kls = [], [], []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start:start + batch_size].to(model.device)
        mean, logvar = model.posterior(batch)
        latents.append(mean.cpu() * model.config.scaling_factor)
        reconstructions.append(model.decoder(mean).cpu())
        kls.append(kl_divergence(mean, logvar).item() * batch.shape[0])
    latents_all = torch.cat(latents)
    return {**reconstruction_metrics(x, torch.cat(reconstructions)), "latent_std": latents_all.std().item(),
            "latent_mean": latents_all.mean().item(), "kl": sum(kls) / x.shape[0]}


def train_image_vae(images: np.ndarray | torch.Tensor, config: ImageVAEConfig | None = None, steps: int = 400,
                    batch_size: int = 64, seed: int = 0, log_every: int = 100, learning_rate: float = 2e-3,
                    holdout: float = 0.1, kl_weight: float = 1e-4,
                    log: Callable[[str], None] = print) -> tuple[ImageVAE, dict[str, Any]]:
    """Train an :class:`ImageVAE` on ``uint8 [N, S, S, 3]`` images (loss in the module docstring),
    then set ``config.scaling_factor`` from the training images.

    A ``holdout`` fraction (:func:`~.image_common.holdout_split` with ``seed``) is kept out of
    training; the returned metrics (see :func:`evaluate_image_vae`) are measured on it, next to
    the loss history and the speed. The same ``seed`` gives bit-identical weights, scaling factor
    and metrics at the same torch thread count. Trains on the CPU; progress (step, loss, rate, time
    left) goes to ``log``.
    """
    config = replace(config or ImageVAEConfig(), scaling_factor=1.0)
    model, train, held_out, generator = training_setup(ImageVAE, config, images, holdout, seed)

    def step_loss(batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mean, logvar = model.posterior(batch)
        z = mean + torch.randn(mean.shape, generator=generator) * (0.5 * logvar).exp()  # reparameterised
        mse = F.mse_loss(model.decoder(z), batch)
        kl = kl_divergence(mean, logvar)
        return mse + kl_weight * kl, {"mse": mse.detach(), "kl": kl.detach()}

    run = train_loop(model, train, step_loss, steps, batch_size, learning_rate, generator, log_every, KIND, log)
    std = _posterior_samples_std(model, train, generator)
    model.config = replace(config, scaling_factor=1.0 / std)
    metrics = {**evaluate_image_vae(model, held_out), **run, "scaling_factor": model.config.scaling_factor,
               "kl_weight": kl_weight, "steps": steps, "batch_size": batch_size, "seed": seed,
               "train_images": train.shape[0], "heldout_images": held_out.shape[0]}
    return model, metrics
