"""Checks of the model's inputs, with errors that name the field and the offending value.

Shape checks read only host-side sizes. Value checks (token and modality ranges) read the
tensors, which on a GPU is a host sync: the model runs them only when it builds the routing plan
itself; a loader that passes a precomputed plan validates its data on the host instead.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..config import ModelConfig


class InputError(ValueError):
    """A model input has the wrong shape, dtype or values."""


def check_shapes(config: ModelConfig, tokens: torch.Tensor, modality_ids: torch.Tensor,
                 **optional: Optional[torch.Tensor]) -> None:
    if tokens.dim() != 2:
        raise InputError(f"tokens must have shape [batch, seq_len], got {tuple(tokens.shape)}")
    named = {"tokens": tokens, "modality_ids": modality_ids,
             **{k: v for k, v in optional.items() if v is not None}}
    for name, tensor in named.items():
        if tuple(tensor.shape) != tuple(tokens.shape):
            raise InputError(f"{name} has shape {tuple(tensor.shape)} but tokens has {tuple(tokens.shape)}")
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise InputError(f"{name} must hold integers, got dtype {tensor.dtype}")
    if tokens.shape[1] > config.max_seq_len:
        raise InputError(f"sequence length {tokens.shape[1]} exceeds max_seq_len={config.max_seq_len}")
    if tokens.numel() == 0:
        raise InputError(f"tokens is empty (shape {tuple(tokens.shape)})")


def _check_range(name: str, values: torch.Tensor, low: int, high: int, what: str) -> None:
    bad = (values < low) | (values >= high)
    if bool(bad.any()):
        position = tuple(int(i) for i in bad.nonzero()[0])
        raise InputError(f"{name}[{', '.join(map(str, position))}] = {int(values[position])} is outside "
                         f"{what} [{low}, {high})")


def check_values(config: ModelConfig, tokens: torch.Tensor, modality_ids: torch.Tensor,
                 positions: Optional[torch.Tensor] = None) -> None:
    _check_range("tokens", tokens, 0, config.vocab_size, f"the vocabulary (vocab_size={config.vocab_size})")
    _check_range("modality_ids", modality_ids, 0, len(config.modalities),
                 f"the modality list {config.modalities}")
    if positions is not None:
        _check_range("positions", positions, 0, config.max_seq_len, f"max_seq_len={config.max_seq_len}")
