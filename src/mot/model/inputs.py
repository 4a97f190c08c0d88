"""Checks of the model's inputs, with errors that name the field and the offending value.

Shape checks read only host-side sizes. Value checks (token and modality ranges, contiguous
document and span ids) read the tensors, which on a GPU is a host sync: the model runs them
only when it builds the routing plan itself; a loader that passes a precomputed plan validates
its data on the host instead.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..config import ModelConfig
from ..errors import MotError


class InputError(MotError, ValueError):
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


def check_mask_ids(document_ids: Optional[torch.Tensor], span_ids: Optional[torch.Tensor], cached: int = 0) -> None:
    """Span ids are >= 0, and each document id and each non-zero span id is one contiguous run of its row.

    The mask (``masks.MaskSpec``) joins every position of an id, wherever it is: a span id that
    comes back lets the first run attend to the later one (a future-token leak), and a document
    id that comes back lets two documents whose positions restart see each other. Document ids
    may be negative (packing pads with -1). With a KV cache the ids are the ``cached``
    positions' followed by the new ones, so that a decoding step cannot reopen an earlier run.
    """
    if span_ids is not None:
        negative = span_ids < 0
        if bool(negative.any()):
            row, position = (int(i) for i in negative.nonzero()[0])
            raise InputError(f"span_ids[{row}, {position}] = {int(span_ids[row, position])} is negative; a span "
                             f"id is 0 outside bidirectional spans and a positive number inside one")
        _check_contiguous("span_ids", "span", span_ids, cached, skip_zero=True)
    if document_ids is not None:
        _check_contiguous("document_ids", "document", document_ids, cached, skip_zero=False)


def _check_contiguous(name: str, what: str, ids: torch.Tensor, cached: int, skip_zero: bool) -> None:
    # A stable sort groups each row's positions by id, in sequence order within an id; an id is one
    # run exactly when the positions of neighbours in this order that share it are neighbours in the row.
    order = ids.argsort(dim=1, stable=True)  # [B, S]
    grouped = ids.gather(1, order)
    gap = (grouped[:, 1:] == grouped[:, :-1]) & (order[:, 1:] - order[:, :-1] != 1)  # [B, S-1]
    if skip_zero:
        gap &= grouped[:, 1:] != 0
    if bool(gap.any()):
        row, k = (int(i) for i in gap.nonzero()[0])
        where = f" (the {cached} cached positions, then the new ones)" if cached else ""
        raise InputError(f"{name}[{row}]{where}: {what} {int(grouped[row, k])} ends at position {int(order[row, k])} "
                         f"and comes back at position {int(order[row, k + 1])}; each {what} id must be one "
                         f"contiguous run of its row, or its runs attend to each other")


def check_latent_shapes(config: ModelConfig, latents: Optional[torch.Tensor], latent_starts: Optional[torch.Tensor],
                        timesteps: Optional[torch.Tensor]) -> None:
    """The continuous inputs come together, with the shapes ``config.latent`` describes."""
    given = {"latents": latents, "latent_starts": latent_starts, "timesteps": timesteps}
    if all(v is None for v in given.values()):
        return
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise InputError(f"latents, latent_starts and timesteps go together; {', '.join(missing)} missing")
    latent = config.latent
    if not latent.enabled:
        raise InputError("latents given, but the model has no continuous path (model.latent.modality is empty)")
    if latents.dim() != 4 or latents.shape[1] != latent.channels:
        raise InputError(f"latents must have shape [images, {latent.channels}, height, width], "
                         f"got {tuple(latents.shape)}")
    height, width = latents.shape[-2:]
    if height % latent.patch_size or width % latent.patch_size:
        raise InputError(f"latents of {height}x{width} do not split into {latent.patch_size}x{latent.patch_size} "
                         f"patches (latent.patch_size)")
    if not latents.dtype.is_floating_point:
        raise InputError(f"latents must be floating point, got dtype {latents.dtype}")
    images = latents.shape[0]
    if tuple(latent_starts.shape) != (images, 2) or latent_starts.dtype.is_floating_point:
        raise InputError(f"latent_starts must be integers of shape [{images}, 2] (row, column), "
                         f"got {tuple(latent_starts.shape)} {latent_starts.dtype}")
    if tuple(timesteps.shape) != (images,) or timesteps.dtype.is_floating_point:
        raise InputError(f"timesteps must be integers of shape [{images}], got {tuple(timesteps.shape)} "
                         f"{timesteps.dtype}")


def check_latent_spans(config: ModelConfig, modality_ids: torch.Tensor, latents: torch.Tensor,
                       latent_starts: torch.Tensor) -> None:
    """Each image's ``P`` positions hold its modality and are followed by its end marker (a host read)."""
    modality = config.modalities.index(config.latent.modality)
    patch = config.latent.patch_size
    patches = (latents.shape[2] // patch) * (latents.shape[3] // patch)
    batch, length = modality_ids.shape
    for image, (row, column) in enumerate(latent_starts.tolist()):
        where = f"image {image} (latent_starts[{image}] = ({row}, {column}), {patches} patches)"
        if not (0 <= row < batch and 0 <= column and column + patches <= length):
            raise InputError(f"{where} does not fit in the [{batch}, {length}] batch")
        if column + patches == length:
            raise InputError(f"{where} runs to the end of its row: an image span must be followed by its end marker")
        span = modality_ids[row, column:column + patches]
        if bool((span != modality).any()):
            raise InputError(f"{where}: its positions are not all {config.latent.modality} tokens")
        if int(modality_ids[row, column + patches]) == modality:
            raise InputError(f"{where} is not followed by its end marker: position {column + patches} still "
                             f"belongs to the {config.latent.modality} modality")
