"""AdamW with weight-decay groups, the warm-up + cosine learning-rate schedule, gradient clipping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..config import ConfigError, check_number, is_finite_number

#: The token embedding and the output head, by parameter name. They are decayed only with
#: ``decay_embeddings``: decay pulls rare tokens' rows to zero (and a modality's whole block of
#: rows while a batch lacks that modality), which is why most recipes exempt them.
EMBEDDING_PARAMETERS = ("embed.weight", "head.weight")
#: Prefixes that torch's own wrappers put into parameter names (``torch.compile``, activation
#: checkpointing); removed before matching, so groups come out the same after wrapping.
_WRAPPER_PREFIXES = ("_orig_mod.", "_checkpoint_wrapped_module.")


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


def _canonical_name(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def parameter_groups(model: nn.Module, config: OptimConfig) -> List[Dict[str, Any]]:
    """AdamW parameter groups: ``decay`` (>= 2-D weights, embeddings only with
    ``decay_embeddings``) and ``no_decay`` (norms, biases, other 1-D tensors, and the embeddings
    by default). Frozen parameters are left out, and so is a group that would be empty.

    Each group carries a ``name`` key, which AdamW ignores and the optimizer state keeps.
    """
    decay: List[nn.Parameter] = []
    no_decay: List[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if _canonical_name(name) in EMBEDDING_PARAMETERS:
            (decay if config.decay_embeddings else no_decay).append(parameter)
        elif parameter.ndim >= 2:
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    groups = [dict(name="decay", params=decay, weight_decay=config.weight_decay),
              dict(name="no_decay", params=no_decay, weight_decay=0.0)]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`, starting at the schedule's step-0 learning rate.

    The trainer sets every group's ``lr`` to :func:`learning_rate` before each step.
    """
    return torch.optim.AdamW(parameter_groups(model, config), lr=learning_rate(0, config),
                             betas=config.betas, eps=config.eps)


def learning_rate(step: int, config: OptimConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based); a pure function of the step, so a
    resumed run needs nothing but the step.

    Warm-up: ``lr * (step + 1) / warmup_steps``, so step 0 already trains (``lr / warmup_steps``)
    and step ``warmup_steps - 1`` reaches ``lr``. Then a half cosine from ``lr`` at step
    ``warmup_steps`` down to ``lr * min_lr_ratio`` at ``total_steps``, and flat after that.
    """
    if step < 0:
        raise ValueError(f"step={step}: must be >= 0")
    peak, floor = config.lr, config.lr * config.min_lr_ratio
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    if step >= config.total_steps:
        return floor
    progress = (step - config.warmup_steps) / (config.total_steps - config.warmup_steps)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def clip_gradients(model: nn.Module, max_norm: Optional[float]) -> torch.Tensor:
    """Scale the gradients so that their global L2 norm is at most ``max_norm`` (``None``: leave
    them alone); return the norm before clipping as a 0-dim tensor on the gradients' device.

    With FSDP2 the gradients are DTensor shards: the norm is first a partial (per-rank) value,
    and ``full_tensor()`` all-reduces it so every rank clips by the same global norm. Nothing is
    read on the host. ``foreach`` is left to torch: the fused kernels where the device has them.
    """
    parameters = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad for p in parameters]
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if torch.distributed.is_available():
        from torch.distributed.tensor import DTensor

        if isinstance(total, DTensor):
            total = total.full_tensor()
    if max_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total
