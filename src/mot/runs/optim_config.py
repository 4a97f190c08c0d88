"""The recipe's ``optim`` section: AdamW, the learning-rate schedule and gradient clipping (built by
:mod:`mot.train.optim`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..config import ConfigError, check_number, is_finite_number


@dataclass
class OptimConfig:
    """AdamW, the learning-rate schedule and gradient clipping."""

    #: Peak learning rate, reached at the end of warm-up.
    lr: float = 3e-4
    betas: Tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    #: Decoupled (AdamW) weight decay of the >= 2-D weights; norms and biases are never decayed.
    weight_decay: float = 0.1
    #: Also decay ``embed.weight`` and ``head.weight``.
    decay_embeddings: bool = False
    #: Steps of linear warm-up; 0 starts at the peak.
    warmup_steps: int = 100
    #: The step at which the cosine decay reaches its floor; the learning rate stays there after.
    total_steps: int = 10000
    #: The floor, as a fraction of ``lr``.
    min_lr_ratio: float = 0.1
    #: Maximum global L2 norm of the gradients; ``None`` disables clipping (the norm is still measured).
    grad_clip: Optional[float] = 1.0
    #: tower -> multiplier of the learning rate for that tower's weights (``{image: 2.0}``); the
    #: towers not named, and the weights outside every tower (embedding, shared head), take 1
    tower_lr: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):  # YAML and OmegaConf give a list
            self.betas = tuple(self.betas)
        validate_optim_config(self)


def _fail(field_name: str, value: Any, why: str) -> None:
    raise ConfigError(f"{field_name}={value!r}: {why}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_optim_config(c: OptimConfig) -> None:
    """Raise :class:`ConfigError` naming the first field of ``c`` that is out of range."""
    for name in ("lr", "eps"):
        check_number(name, getattr(c, name), "must be a positive number", lambda v: v > 0)
    if not isinstance(c.betas, tuple) or len(c.betas) != 2 or not all(is_finite_number(b) and 0 <= b < 1
                                                                     for b in c.betas):
        _fail("betas", c.betas, "must be two numbers in [0, 1)")
    check_number("weight_decay", c.weight_decay, "must be a number >= 0", lambda v: v >= 0)
    if not isinstance(c.decay_embeddings, bool):
        _fail("decay_embeddings", c.decay_embeddings, "must be true or false")
    if not _is_count(c.warmup_steps) or c.warmup_steps < 0:
        _fail("warmup_steps", c.warmup_steps, "must be an integer >= 0")
    if not _is_count(c.total_steps) or c.total_steps < 1:
        _fail("total_steps", c.total_steps, "must be an integer >= 1")
    if c.warmup_steps > c.total_steps:
        _fail("warmup_steps", c.warmup_steps, f"must not exceed total_steps={c.total_steps}")
    check_number("min_lr_ratio", c.min_lr_ratio, "must be a number in [0, 1]", lambda v: 0 <= v <= 1)
    if c.grad_clip is not None:
        check_number("grad_clip", c.grad_clip, "must be a positive number, or null for no clipping", lambda v: v > 0)
    for tower, scale in c.tower_lr.items():
        check_number(f"tower_lr.{tower}", scale, "must be a positive number", lambda v: v > 0)
