"""What the two image tokenizers (:mod:`.image_vq`, :mod:`.image_vae`) share: the input
convention and its checks, the conv encoder/decoder and the training loop (save/load: :mod:`.saved`).

Image convention: ``uint8 [B, S, S, 3]`` (channels last, as files and numpy hold them) or
``float [B, 3, S, S]`` in ``[-1, 1]`` (what the networks compute on).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..progress import Progress

#: Float images may overshoot ``[-1, 1]`` by this much (rounding in the caller's conversion).
RANGE_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------------- images --

def images_to_tensor(images: torch.Tensor | np.ndarray, image_size: int) -> torch.Tensor:
    """``uint8 [B, S, S, 3]`` or ``float [B, 3, S, S]`` in ``[-1, 1]`` -> ``float32 [B, 3, S, S]``
    in ``[-1, 1]``. Raises ``ValueError``/``TypeError`` naming the shape, dtype or range at fault."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor or numpy array, not {type(images).__name__}")
    s = image_size
    if images.dtype == torch.uint8:
        if images.dim() != 4 or tuple(images.shape[1:]) != (s, s, 3):
            raise ValueError(f"uint8 images must have shape [B, {s}, {s}, 3] (channels last); "
                             f"got {list(images.shape)}")
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 [B, {s}, {s}, 3] or float [B, 3, {s}, {s}]; "
                        f"got dtype {images.dtype}")
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
        raise ValueError(f"float images must have shape [B, 3, {s}, {s}] (channels first); "
                         f"got {list(images.shape)}")
    if images.numel():
        low, high = images.min().item(), images.max().item()
        if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE or math.isnan(low + high):
            raise ValueError(f"float images must lie in [-1, 1]; got values in [{low:.4g}, {high:.4g}]")
    return images.float()


def tensor_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``float [B, 3, S, S]`` in ``[-1, 1]`` -> ``uint8 [B, S, S, 3]`` (the inverse convention)."""
    return images.detach().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def reconstruction_metrics(originals: torch.Tensor, reconstructions: torch.Tensor) -> dict[str, float]:
    """MSE and PSNR on pixel values scaled to ``[0, 1]`` (inputs are ``[-1, 1]``)."""
    mse = F.mse_loss(reconstructions.clamp(-1, 1), originals).item() / 4.0  # [-1,1] -> [0,1] scale
    return {"recon_mse": mse, "psnr": 10 * math.log10(1.0 / max(mse, 1e-12))}


# --------------------------------------------------------------------------------- networks --

def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: GroupNorm, SiLU, 3x3 conv, twice."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def conv_encoder(width: int, channel_mult: tuple[int, ...], res_blocks: int, out_channels: int) -> nn.Sequential:
    """``[B, 3, S, S]`` -> ``[B, out_channels, S / 2^(len(channel_mult)-1), ...]``: one level per
    entry of ``channel_mult``, a strided 4x4 conv between levels."""
    layers: list[nn.Module] = [nn.Conv2d(3, width * channel_mult[0], 3, padding=1)]
    previous = width * channel_mult[0]
    for level, mult in enumerate(channel_mult):
        if level > 0:
            layers.append(nn.Conv2d(previous, width * mult, 4, stride=2, padding=1))
        previous = width * mult
        layers += [ResBlock(previous) for _ in range(res_blocks)]
    layers += [_norm(previous), nn.SiLU(), nn.Conv2d(previous, out_channels, 1)]
    return nn.Sequential(*layers)


def conv_decoder(width: int, channel_mult: tuple[int, ...], res_blocks: int, in_channels: int) -> nn.Sequential:
    """The encoder's mirror. Upsampling is nearest-neighbour then a 3x3 conv, which avoids the
    checkerboard artefacts of transposed convolutions."""
    widths = [width * mult for mult in reversed(channel_mult)]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
    for level, channels in enumerate(widths):
        if level > 0:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(widths[level - 1], channels, 3, padding=1)]
        layers += [ResBlock(channels) for _ in range(res_blocks)]
    layers += [_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], 3, 3, padding=1)]
    return nn.Sequential(*layers)


def check_architecture(config: Any) -> None:
    """Validate the fields both tokenizer configs share; ``ConfigError`` names the field."""
    for name, minimum in (("image_size", 1), ("width", 1), ("res_blocks", 0)):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{name}={value!r}: must be an integer >= {minimum}")
    mult = config.channel_mult
    if not mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mult):
        raise ConfigError(f"channel_mult={mult!r}: must be a non-empty list of positive integers")
    downsample = 2 ** (len(mult) - 1)
    if config.image_size % downsample:
        raise ConfigError(f"image_size={config.image_size}: must be divisible by the downsampling "
                          f"factor {downsample} that channel_mult={list(mult)} gives")


# --------------------------------------------------------------------------------- training --

def build_seeded(model_cls: Type[nn.Module], config: Any, seed: int) -> nn.Module:
    """Construct ``model_cls(config)`` with weights drawn from ``seed`` alone, leaving the global
    random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_cls(config)


def training_setup(model_cls: Type[nn.Module], config: Any, images: torch.Tensor | np.ndarray, holdout: float,
                   seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Generator]:
    """Everything a training run draws from ``seed``: the initial model, the train and held-out
    images (:func:`holdout_split`), and the generator that picks the batches."""
    x = images_to_tensor(images, config.image_size)
    train_indices, held_out_indices = holdout_split(x.shape[0], holdout, seed)
    generator = torch.Generator().manual_seed(seed)
    return build_seeded(model_cls, config, seed), x[train_indices], x[held_out_indices], generator


def holdout_split(count: int, holdout: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, held_out)`` of a random split of ``count`` images drawn from ``seed``
    alone, with at least one image on each side. The training functions split with it, so a
    caller can find which images were held out."""
    if count < 2:
        raise ValueError(f"need at least 2 training images (one is held out), got {count}")
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout={holdout!r}: must be a fraction in (0, 1)")
    held = min(count - 1, max(1, round(count * holdout)))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[held:], order[:held]


def train_loop(model: nn.Module, images: torch.Tensor,
               step_loss: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]],
               steps: int, batch_size: int, learning_rate: float, generator: torch.Generator,
               log_every: int, name: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """AdamW on batches drawn (with replacement) by ``generator``; linear warm-up then cosine decay
    to a tenth, gradient norm clipped at 1. Torch's intra-op threads use every core by default.
    Progress (step, loss, rate, time left) goes to ``log`` (see :class:`mot.progress.Progress`).
    Returns the loss history (every ``log_every`` steps; 0: none) and the wall-clock speed."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must both be positive")
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.99), weight_decay=0.0)
    warmup = max(1, min(100, steps // 10))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    history: list[dict[str, float]] = []
    model.train()
    start = time.perf_counter()
    with Progress(f"training {name}", steps, log=log, unit="steps") as tracker:
        for step in range(steps):
            batch = images[torch.randint(0, images.shape[0], (batch_size,), generator=generator)]
            loss, parts = step_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            values = {"loss": loss.item(), **{k: float(v) for k, v in parts.items()}}
            tracker.update(**values)
            if log_every and (step % log_every == 0 or step == steps - 1):
                history.append({"step": step, **values})
    seconds = time.perf_counter() - start
    model.eval()
    return {"history": history, "train_seconds": seconds, "steps_per_second": steps / seconds}
