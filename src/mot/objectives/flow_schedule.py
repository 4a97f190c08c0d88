"""Rectified flow for Transfusion's images: straight paths from data to noise, Euler/Heun sampling.

Flow matching (Lipman et al., 2023) with the straight-line path of rectified flow (Liu et al.,
2023), as Bagel, Stable Diffusion 3 and transfusion-pytorch train their continuous images. On the
same integer timestep grid as DDPM, ``t = 0..T-1``, level ``t`` sits at noise fraction
``s_t = (t + 1) / T`` and

    x_t = (1 - s_t) x0 + s_t eps,      eps ~ N(0, I),

so the noisiest level ``T - 1`` is pure noise (``s = 1``, where sampling starts) and the cleanest is
``1 / T`` away from the data. The denoiser predicts the velocity ``v = dx/ds = eps - x0``; from a
prediction, ``x0_hat = x_t - s_t v`` and ``eps_hat = x_t + (1 - s_t) v``.

Sampling integrates ``dx/ds = v`` from ``s = 1`` down to ``s = 0``. One Euler step to the next
visited level ``p`` is ``x_p = x_t + (s_p - s_t) v``, written here as ``(1 - s_p) x0_hat + s_p
eps_hat`` (the same number) so that ``clip_sample`` can clamp ``x0_hat`` as in DDPM. Heun's method
averages the slope at both ends of the step (:meth:`FlowScheduler.step` on the averaged velocity;
the pipeline makes the second model call) and falls back to Euler on the last step, which ends at
``s = 0``, a level the model never saw. No noise is drawn while sampling: the flow is an ODE.

Keeping integer levels lets flow share everything around the scheduler with DDPM: the timestep
embedding, the noise cap for captioned images, the validation grid, and :meth:`set_timesteps`.
"""

from __future__ import annotations

from typing import Optional

import torch

from .diffusion_schedule import ScheduleError, TimestepGrid, Timesteps, _work_dtype, check_clip_sample

METHODS = ("euler", "heun")


class FlowScheduler(TimestepGrid):
    """Straight-path noising and Euler/Heun steps for a velocity-predicting denoiser."""

    objective = "flow"
    methods = METHODS

    def __init__(self, train_steps: int = 1000, method: str = "euler", clip_sample: Optional[float] = None):
        super().__init__(train_steps)
        if method not in METHODS:
            raise ScheduleError(f"method must be one of {METHODS}, got {method!r}")
        check_clip_sample(clip_sample)
        self.method, self.clip_sample = method, clip_sample
        #: [T] float64: the noise fraction s_t = (t + 1) / T of every level.
        self.sigmas = torch.arange(1, train_steps + 1, dtype=torch.float64) / train_steps

    def sigma(self, t: int) -> float:
        """The noise fraction of level ``t`` (``0.0`` for ``t = -1``, the data itself)."""
        return 0.0 if int(t) < 0 else float(self.sigmas[self._check(t)])

    # ---- training -------------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: Timesteps) -> torch.Tensor:
        """``x_t = (1 - s_t) x0 + s_t noise``; x0, noise [N, ...], timesteps [N] int64 or one int."""
        if noise.shape != x0.shape:
            raise ScheduleError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        s = self._coef(self.sigmas, timesteps, x0)
        return ((1 - s) * x0.to(s.dtype) + s * noise.to(s.dtype)).to(x0.dtype)

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the denoiser learns to predict: the velocity ``noise - x0`` of the straight path."""
        return noise - x0

    def predict_x0(self, velocity: torch.Tensor, timesteps: Timesteps, x_t: torch.Tensor) -> torch.Tensor:
        """``x0_hat = x_t - s_t v``, the data end of the straight line through ``x_t``."""
        s = self._coef(self.sigmas, timesteps, x_t)
        return (x_t.to(s.dtype) - s * velocity.to(s.dtype)).to(x_t.dtype)

    # ---- sampling -------------------------------------------------------------------------------
    def step(self, velocity: torch.Tensor, timestep: int, x_t: torch.Tensor,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One Euler step from level ``timestep`` (a value of ``self.timesteps``) to the next level
        of the schedule, along ``velocity`` (same shape as ``x_t``). ``generator`` is accepted for
        the DDPM scheduler's signature and unused. Returns x_t's dtype."""
        if velocity.shape != x_t.shape:
            raise ScheduleError(f"velocity shape {tuple(velocity.shape)} != x_t shape {tuple(x_t.shape)}")
        t = int(timestep)
        s, s_prev = self.sigma(t), self.sigma(self.previous_timestep(t))
        dtype = _work_dtype(x_t)
        x, v = x_t.to(dtype), velocity.to(dtype)
        if self.clip_sample is None:
            return (x + (s_prev - s) * v).to(x_t.dtype)
        x0 = (x - s * v).clamp(-self.clip_sample, self.clip_sample)
        eps = (x - (1 - s) * x0) / s  # the noise end of the line through x_t and the clamped x0
        return ((1 - s_prev) * x0 + s_prev * eps).to(x_t.dtype)
