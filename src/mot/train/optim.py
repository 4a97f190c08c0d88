"""AdamW with weight-decay groups, the warm-up + cosine learning-rate schedule, gradient clipping."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from ..runs.optim_config import OptimConfig

#: The token embedding and the output head(s), by parameter name (an untied head has one weight per
#: tower, ``head.towers.<tower>.weight``). They are decayed only with ``decay_embeddings``: decay
#: pulls rare tokens' rows to zero (and a modality's whole block of rows while a batch lacks that
#: modality), which is why most recipes exempt them.
EMBEDDING_PARAMETERS = ("embed.weight", "head.weight")

#: Prefixes that torch's own wrappers put into parameter names (``torch.compile``, activation
#: checkpointing); removed before matching, so groups come out the same after wrapping.
_WRAPPER_PREFIXES = ("_orig_mod.", "_checkpoint_wrapped_module.")


def _canonical_name(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def is_embedding(name: str) -> bool:
    """Whether parameter ``name`` (wrapper prefixes removed) is the embedding or an output head."""
    return name in EMBEDDING_PARAMETERS or name.startswith("head.towers.")


def parameter_groups(model: nn.Module, config: OptimConfig) -> List[Dict[str, Any]]:
    """AdamW parameter groups: ``decay`` (>= 2-D weights, embeddings only with
    ``decay_embeddings``) and ``no_decay`` (norms, biases, other 1-D tensors, and the embeddings
    by default), each split once more for every tower of ``config.tower_lr`` (``decay.image``).
    Frozen parameters are left out, and so is a group that would be empty.

    Each group carries a ``name`` key and an ``lr_scale`` (the tower's multiplier, else 1), which
    AdamW ignores and the optimizer state keeps; the trainer sets ``lr`` to the schedule's value
    times ``lr_scale``.
    """
    groups: Dict[str, Dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        name = _canonical_name(name)
        decayed = config.decay_embeddings if is_embedding(name) else parameter.ndim >= 2
        kind = "decay" if decayed else "no_decay"
        tower = tower_of_parameter(name)
        if tower in config.tower_lr:
            kind = f"{kind}.{tower}"
        group = groups.setdefault(kind, dict(name=kind, params=[], weight_decay=config.weight_decay if decayed else 0.0,
                                             lr_scale=config.tower_lr.get(tower, 1.0)))
        group["params"].append(parameter)
    return sorted(groups.values(), key=lambda group: (group["name"].split(".")[0] != "decay", group["name"]))


def tower_of_parameter(name: str) -> Optional[str]:
    """The tower (or weight group) whose weights ``name`` is: ``blocks.0.ffn.towers.image.up.weight`` ->
    ``image``; ``None`` for the embedding, a shared head and the latent path."""
    parts = name.split(".")
    return parts[parts.index("towers") + 1] if "towers" in parts else None


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
