"""The sampling loop between a denoiser and a noise scheduler (the diffusers split: the scheduler
steps, the model predicts, this loop calls them in turn).

``predict(x_t, t)`` is the model's prediction at level ``t`` (noise for DDPM, velocity for flow),
already mixed by classifier-free guidance where the caller guides. Heun's method (flow only) takes
the Euler step, predicts again at the step's end, and steps with the average of the two slopes;
its last step, which ends at the data (``t = -1``, never a training level), stays Euler.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch

from ..objectives.schedulers import NoiseScheduler
from ..progress import progress

Predict = Callable[[torch.Tensor, int], torch.Tensor]


def denoise(scheduler: NoiseScheduler, predict: Predict, x: torch.Tensor,
            generator: Optional[torch.Generator | List[torch.Generator]] = None,
            log: Optional[Callable[[str], None]] = None,
            what: str = "images") -> torch.Tensor:
    """Run ``x`` (pure noise at ``scheduler.timesteps[0]``) down the scheduler's inference schedule;
    ``generator`` draws DDPM's noise (a list: one per row); ``log`` gets progress (``what``: what is denoised)."""
    timesteps = scheduler.timesteps.tolist()
    if log is not None:
        timesteps = progress(timesteps, f"denoising {what}", unit="steps", log=log)
    for timestep in timesteps:
        slope = predict(x, timestep)
        previous = scheduler.previous_timestep(timestep)
        if scheduler.method == "heun" and previous >= 0:
            slope = (slope + predict(scheduler.step(slope, timestep, x), previous)) / 2
        x = scheduler.step(slope, timestep, x, generator=generator)
    return x
