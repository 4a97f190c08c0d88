"""Does a Transfusion model's image denoiser read its caption, and does it need the transformer?

For clean validation latents with their captions, noised at a fixed grid of timesteps with noise
fixed per image, the mean squared error of the predicted noise when the prompt is:

* ``caption``: the image's own caption;
* ``other``: another scene's caption (the captions rolled by one);
* ``none``: no caption (``<bos> <boi>``, the unconditional prompt of classifier-free guidance);
* ``bypass``: its own caption, with the transformer's output zeroed before the patch decoder, so
  only what goes around the transformer (a U-Net's skip connections) predicts the noise.

A model that uses its prompt has ``caption`` below ``other`` and ``none``; one whose patch path
denoises by itself has ``bypass`` close to ``caption``. (The measurements behind the notes on the
U-Net's skips and on the linear patch path in docs/transfusion.md.)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Sequence

import torch

from ..generate.transfusion import SamplingError, TransfusionSampler
from ..objectives.diffusion_schedule import DiffusionScheduler

CONDITIONS = ("caption", "other", "none", "bypass")
TIMESTEPS = (100, 300, 500, 700, 900)


@contextmanager
def transformer_output_zeroed(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, the final norm (the transformer's last output, which the patch decoder and
    the text head read) returns zeros."""
    def zeros(module, inputs, output):
        return [torch.zeros_like(part) for part in output]

    handle = model.final_norm.register_forward_hook(zeros)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def caption_use(sampler: TransfusionSampler, latents: torch.Tensor, captions: Sequence[Sequence[int]],
                timesteps: Sequence[int] = TIMESTEPS, seed: int = 0) -> Dict[str, Dict[int, float]]:
    """``{condition: {timestep: mean squared noise error}}`` over ``latents [N, C, h, w]`` (clean)
    and their ``captions`` (unified text ids), for every condition in :data:`CONDITIONS`."""
    if len(latents) != len(captions) or len(captions) < 2:
        raise SamplingError(f"caption_use needs at least 2 images with a caption each, got {len(latents)} "
                            f"latents and {len(captions)} captions")
    scheduler = DiffusionScheduler(sampler.train_steps, sampler.schedule)
    for t in timesteps:
        if not 0 <= int(t) < sampler.train_steps:
            raise SamplingError(f"timestep {t} is outside [0, {sampler.train_steps})")
    latents = latents.to(sampler.device, torch.float32)
    own: List[Sequence[int]] = list(captions)
    prompts = {"caption": own, "other": own[1:] + own[:1], "none": [[]] * len(own)}
    denoisers = {name: sampler.denoiser(texts) for name, texts in prompts.items()}
    generator = torch.Generator(device=sampler.device).manual_seed(seed)
    noise = torch.randn((len(timesteps), *latents.shape), generator=generator, device=sampler.device)
    errors: Dict[str, Dict[int, float]] = {name: {} for name in CONDITIONS}
    for noise_t, t in zip(noise, timesteps):
        x_t = scheduler.add_noise(latents, noise_t, int(t))
        for name in CONDITIONS:
            if name == "bypass":
                with transformer_output_zeroed(sampler.model):
                    eps = denoisers["caption"](x_t, int(t))
            else:
                eps = denoisers[name](x_t, int(t))
            errors[name][int(t)] = float(torch.mean((eps.float() - noise_t) ** 2))
    return errors
