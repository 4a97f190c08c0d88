"""The image objective's noise process by name: DDPM (eps-prediction) or rectified flow
(velocity prediction), each with its samplers. Training and sampling both ask here, so a run's
``diffusion.objective`` picks the same process for both."""

from __future__ import annotations

from typing import Optional, Union

from .diffusion_schedule import DiffusionScheduler, ScheduleError
from .flow_schedule import FlowScheduler

#: objective -> its sampling methods, the first the default
SAMPLING_METHODS = {"ddpm": DiffusionScheduler.methods, "flow": FlowScheduler.methods}
OBJECTIVES = tuple(SAMPLING_METHODS)
ALL_METHODS = tuple(m for methods in SAMPLING_METHODS.values() for m in methods)

NoiseScheduler = Union[DiffusionScheduler, FlowScheduler]


def check_objective(objective: str) -> None:
    if objective not in SAMPLING_METHODS:
        raise ScheduleError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def sampling_method(objective: str, method: Optional[str] = None) -> str:
    """``method`` after checking that it samples ``objective``'s process; ``None``: the default."""
    check_objective(objective)
    if method is None:
        return SAMPLING_METHODS[objective][0]
    if method not in SAMPLING_METHODS[objective]:
        raise ScheduleError(f"method {method!r} does not sample a {objective} model: use one of "
                            f"{list(SAMPLING_METHODS[objective])}")
    return method


def make_scheduler(objective: str, train_steps: int, schedule: str = "cosine", method: Optional[str] = None,
                   eta: float = 0.0, clip_sample: Optional[float] = None) -> NoiseScheduler:
    """The scheduler of ``objective`` over ``train_steps`` levels. ``schedule`` (cosine or linear
    betas) and ``eta`` (DDIM) only concern DDPM; flow's path is fixed."""
    method = sampling_method(objective, method)
    if objective == "flow":
        return FlowScheduler(train_steps, method, clip_sample)
    return DiffusionScheduler(train_steps, schedule, method, eta, clip_sample)
