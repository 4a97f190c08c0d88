"""The noise schedule of Transfusion's image diffusion: noising for training, DDPM/DDIM steps for sampling.

The forward process noises a clean latent ``x0`` to ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``
with ``eps ~ N(0, I)`` and ``abar_t = prod_{i<=t} (1 - beta_i)`` for ``t = 0..T-1`` (``t = 0`` is the
least noisy level, ``T - 1`` nearly pure noise). The default schedule is the cosine one of Nichol &
Dhariwal (2021), ``abar_t = f(t + 1) / f(0)`` with ``f(u) = cos((u/T + s) / (1 + s) * pi/2)^2`` and
``s = 0.008``, built from its betas clipped at ``0.999`` so that the last level is not a division
by zero; DDPM's linear betas (Ho et al., 2020) are kept for completeness.

The denoiser predicts ``eps`` (as in Transfusion); :meth:`DiffusionScheduler.predict_x0` turns the
prediction into ``x0_hat``, and both samplers are written in terms of ``x0_hat`` and ``eps``.

Sampling may use fewer steps than training (:meth:`DiffusionScheduler.set_timesteps`). A respaced
chain ``t -> prev`` is a Markov chain in its own right whose per-step beta is
``beta' = 1 - abar_t / abar_prev``: the marginals ``q(x_t | x0)`` only depend on ``abar``, so taking
the ratio of the cumulative products keeps every visited level exactly as noisy as in training
(Nichol & Dhariwal 2021, section 4). DDPM uses the posterior ``q(x_prev | x_t, x0_hat)`` with
variance ``beta_tilde = (1 - abar_prev) / (1 - abar_t) * beta'``; DDIM (Song et al., 2021) is
deterministic at ``eta = 0`` and equals DDPM at ``eta = 1``.

The scheduler holds no model and runs no loop (as in diffusers): the sampler calls :meth:`step`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from ..errors import MotError

SCHEDULES = ("cosine", "linear")
METHODS = ("ddpm", "ddim")
PREDICTIONS = ("epsilon",)
COSINE_S = 0.008
MAX_BETA = 0.999

Timesteps = Union[int, torch.Tensor]


class ScheduleError(MotError, ValueError):
    """A bad argument to the diffusion schedule; the message names the argument and its value."""


def cosine_betas(train_steps: int, s: float = COSINE_S, max_beta: float = MAX_BETA) -> torch.Tensor:
    """[T] float64 betas of the cosine schedule: ``beta_t = min(1 - f(t+1)/f(t), max_beta)``."""
    def f(u: float) -> float:
        return math.cos((u / train_steps + s) / (1 + s) * math.pi / 2) ** 2
    return torch.tensor([min(1 - f(t + 1) / f(t), max_beta) for t in range(train_steps)],
                        dtype=torch.float64)


def linear_betas(train_steps: int) -> torch.Tensor:
    """[T] float64 betas of DDPM, 1e-4..0.02 at T = 1000, scaled by 1000/T as in improved-diffusion
    so that other T span the same total noise."""
    scale = 1000 / train_steps
    return torch.linspace(1e-4 * scale, 0.02 * scale, train_steps, dtype=torch.float64).clamp(max=MAX_BETA)


def standard_normal(shape: Sequence[int], generator, dtype: torch.dtype, device) -> torch.Tensor:
    """``N(0, I)`` of ``shape`` drawn with ``generator``: one ``torch.Generator`` for the whole
    batch, or a list of them, one per row, so that each row draws what it would draw alone (a
    server denoises requests with their own seeds in one batch)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ScheduleError(f"{len(generator)} generators for {shape[0]} rows")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=dtype, device=device) for g in generator])
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    # bf16/fp16 latents are upcast: sqrt(abar) reaches ~5e-5 at the noisiest cosine level.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class TimestepGrid:
    """The integer timestep grid ``0..T-1`` shared by every noise process, and the inference
    schedule: which levels a sampler visits (:meth:`set_timesteps`) and in what order."""

    def __init__(self, train_steps: int):
        if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 1:
            raise ScheduleError(f"train_steps must be an int >= 1, got {train_steps!r}")
        self.train_steps = train_steps
        #: [n] int64, descending: the inference schedule; every training step until set_timesteps.
        self.timesteps = torch.arange(train_steps - 1, -1, -1, dtype=torch.int64)
        self._prev = self._prev_map()

    def _check(self, timesteps: Timesteps) -> torch.Tensor:
        """``timesteps`` as a CPU int64 tensor, after checking it lies in ``[0, T)``."""
        t = torch.as_tensor(timesteps)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ScheduleError(f"timesteps must be integers, got dtype {t.dtype}")
        t = t.to("cpu", torch.int64)  # one host sync per call: the tables live on the CPU
        bad = t[(t < 0) | (t >= self.train_steps)]
        if bad.numel():
            raise ScheduleError(f"timesteps must lie in [0, {self.train_steps}), got {bad[0].item()}")
        return t

    def _coef(self, table: torch.Tensor, timesteps: Timesteps, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` shaped to broadcast against ``like [N, ...]``: ``[N, 1, ...]`` (or ``[]``)."""
        t = self._check(timesteps)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != like.shape[0]):
            raise ScheduleError(f"timesteps must be [] or [N={like.shape[0]}], got shape {tuple(t.shape)}")
        c = table[t].to(like.device, _work_dtype(like))
        return c.reshape(c.shape + (1,) * (like.dim() - c.dim()))

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Set and return ``self.timesteps``: [n] int64, descending, ``round(linspace(T-1, 0, n))``.

        Both ends are always visited: sampling starts at ``T - 1`` (the level that N(0, I) noise
        matches; diffusers' "leading" spacing would start lower, at ``T - T/n``) and ends at ``0``.
        With ``n = 1`` the single step is ``T - 1``. Spacing is >= 1, so values are distinct.
        """
        n = num_inference_steps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.train_steps:
            raise ScheduleError(f"num_inference_steps must be an int in [1, {self.train_steps}], got {n!r}")
        grid = torch.linspace(self.train_steps - 1, 0, n, dtype=torch.float64)
        self.timesteps = torch.floor(grid + 0.5).to(torch.int64)  # round half up, no banker's ties
        self._prev = self._prev_map()
        return self.timesteps

    def _prev_map(self) -> dict:
        ts = self.timesteps.tolist()
        return dict(zip(ts, ts[1:] + [-1]))

    def previous_timestep(self, t: int) -> int:
        """The step after ``t`` in ``self.timesteps`` (``-1`` after the last); ``t`` must be in it."""
        t = int(t)
        if t not in self._prev:
            raise ScheduleError(f"timestep {t} is not in the inference schedule set by set_timesteps")
        return self._prev[t]


def check_clip_sample(clip_sample: Optional[float]) -> None:
    if clip_sample is not None and not (math.isfinite(clip_sample) and clip_sample > 0):
        raise ScheduleError(f"clip_sample must be None or a float > 0, got {clip_sample!r}")


class DiffusionScheduler(TimestepGrid):
    """Noise schedule plus one-step DDPM/DDIM update, for an eps-predicting denoiser.

    ``eta`` only matters for ``method="ddim"``. ``clip_sample``: clamp ``x0_hat`` to
    ``[-clip_sample, clip_sample]`` in :meth:`step`; ``None`` (default) does not clip, since VAE
    latents are roughly unit-variance but not bounded like pixels.
    """

    objective = "ddpm"
    methods = METHODS

    def __init__(self, train_steps: int = 1000, schedule: str = "cosine", method: str = "ddpm",
                 eta: float = 0.0, clip_sample: Optional[float] = None, prediction: str = "epsilon"):
        super().__init__(train_steps)
        if schedule not in SCHEDULES:
            raise ScheduleError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if method not in METHODS:
            raise ScheduleError(f"method must be one of {METHODS}, got {method!r}")
        if prediction not in PREDICTIONS:
            raise ScheduleError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
            raise ScheduleError(f"eta must be a finite float >= 0, got {eta!r}")
        check_clip_sample(clip_sample)
        self.schedule, self.method = schedule, method
        self.eta, self.clip_sample, self.prediction = float(eta), clip_sample, prediction
        #: [T] float64.
        self.betas = cosine_betas(train_steps) if schedule == "cosine" else linear_betas(train_steps)
        #: [T] float64: abar_t, strictly decreasing from ~1 (t = 0) towards 0 (t = T - 1).
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)

    # ---- training -------------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: Timesteps) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``; x0, noise [N, ...], timesteps [N] int64
        (one level per sample) or a single int. Returns x0's dtype."""
        if noise.shape != x0.shape:
            raise ScheduleError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        a = self._coef(self.alphas_cumprod.sqrt(), timesteps, x0)
        b = self._coef((1 - self.alphas_cumprod).sqrt(), timesteps, x0)
        return (a * x0.to(a.dtype) + b * noise.to(a.dtype)).to(x0.dtype)

    def predict_x0(self, eps: torch.Tensor, timesteps: Timesteps, x_t: torch.Tensor) -> torch.Tensor:
        """``x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``, the inverse of :meth:`add_noise`."""
        a = self._coef(self.alphas_cumprod.sqrt(), timesteps, x_t)
        b = self._coef((1 - self.alphas_cumprod).sqrt(), timesteps, x_t)
        return ((x_t.to(a.dtype) - b * eps.to(a.dtype)) / a).to(x_t.dtype)

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the denoiser learns to predict from ``add_noise(x0, noise, t)``: the noise ``eps``."""
        return noise

    # ---- sampling -------------------------------------------------------------------------------
    def step(self, eps: torch.Tensor, timestep: int, x_t: torch.Tensor,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``x_prev`` from ``x_t`` [N, ...] and the predicted ``eps`` (same shape) at ``timestep``.

        ``timestep`` is one value of ``self.timesteps`` shared by the batch. Noise is drawn with
        ``generator`` (reproducible; a list: one per row, see :func:`standard_normal`); none at the
        last step (prev < 0), where both methods return ``x0_hat``. Returns x_t's dtype.
        """
        if eps.shape != x_t.shape:
            raise ScheduleError(f"eps shape {tuple(eps.shape)} != x_t shape {tuple(x_t.shape)}")
        t = int(timestep)
        self._check(t)
        prev = self.previous_timestep(t)
        abar_t = self.alphas_cumprod[t].item()
        abar_prev = self.alphas_cumprod[prev].item() if prev >= 0 else 1.0
        beta = 1 - abar_t / abar_prev  # the respaced chain's beta for t -> prev
        dtype = _work_dtype(x_t)
        x, e = x_t.to(dtype), eps.to(dtype)
        x0 = (x - math.sqrt(1 - abar_t) * e) / math.sqrt(abar_t)
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
            e = (x - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)  # keep eps consistent with x0
        if self.method == "ddpm":
            mean = (math.sqrt(abar_prev) * beta / (1 - abar_t)) * x0 \
                + (math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar_t)) * x
            var = (1 - abar_prev) / (1 - abar_t) * beta
        else:
            var = self.eta ** 2 * (1 - abar_prev) / (1 - abar_t) * beta
            mean = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - var, 0.0)) * e
        if prev < 0 or var == 0.0:
            return mean.to(x_t.dtype)
        z = standard_normal(x.shape, generator, dtype, x.device)
        return (mean + math.sqrt(var) * z).to(x_t.dtype)
