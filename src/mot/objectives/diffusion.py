"""The image side of the Transfusion objective: noising the latents of a batch, and the loss.

Every random draw comes from a generator seeded by a key (for training: seed, step, rank and
micro-batch), never from global state, so a resumed run draws the same noise as an uninterrupted
one (docs/design.md invariant 6) and validation noise is the same at every evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .schedulers import NoiseScheduler


def generator_for(key: Sequence[int], device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded from the integers of ``key`` (hashed, so nearby keys
    give unrelated streams)."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0]) >> 1
    return torch.Generator(device=device).manual_seed(seed)


@dataclass
class NoisedLatents:
    """Latents ``x_t`` at ``timesteps [N]`` and what the denoiser should predict from them,
    ``target [N, C, H, W]`` (the noise for DDPM, the velocity for flow)."""

    noisy: torch.Tensor
    target: torch.Tensor
    timesteps: torch.Tensor


def draw_timesteps(count: int, train_steps: int, generator: torch.Generator,
                   capped: Optional[torch.Tensor] = None, cap_fraction: float = 0.0,
                   cap_timestep: int = 0) -> torch.Tensor:
    """``[count]`` int64 timesteps, uniform over ``[0, train_steps)`` (on the generator's device, CPU).

    Where ``capped [count]`` (bool) is true, a ``cap_fraction`` of the images instead get a
    timestep uniform over ``[0, cap_timestep]``: images followed by their caption, which
    Transfusion keeps nearly clean now and then so that captioning does not only see noise.
    Every draw is made for every image, so the stream does not depend on which are capped.
    """
    uniform = torch.randint(0, train_steps, (count,), generator=generator)
    low = torch.randint(0, cap_timestep + 1, (count,), generator=generator)
    cap = torch.rand(count, generator=generator) < cap_fraction
    if capped is not None:
        uniform = torch.where(capped.cpu() & cap, low, uniform)
    return uniform


def noise_latents(latents: torch.Tensor, timesteps: torch.Tensor, scheduler: NoiseScheduler,
                  generator: torch.Generator) -> NoisedLatents:
    """Draw ``eps ~ N(0, I)`` like ``latents`` (with ``generator``, on its device) and noise them to
    ``timesteps [N]`` (given on the CPU: the scheduler's tables live there, so no host sync)."""
    noise = torch.randn(latents.shape, generator=generator, device=generator.device, dtype=torch.float32)
    noise = noise.to(latents.device)
    noisy = scheduler.add_noise(latents.float(), noise, timesteps)
    return NoisedLatents(noisy, scheduler.target(latents.float(), noise), timesteps.to(latents.device))


def diffusion_loss_per_image(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[N]`` fp32: the mean squared error of the prediction (noise or velocity) over each image's
    latent (the paper's ``L_DDPM``, "computed per image")."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {list(prediction.shape)} and target {list(target.shape)} differ in shape")
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
