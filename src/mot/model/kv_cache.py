"""A key/value cache, so generation does not recompute what earlier positions already computed.

Keys and values of earlier positions do not change when later positions are added (the mask is
causal outside images), so the model keeps them per layer, after the rotary rotation, in sequence
order: ``[B, kv_heads, S, head_dim]``. With them it keeps the earlier positions' document and span
ids, which the mask of later queries needs.

Two uses: ``append`` (the default) adds each forward's positions to the cache, for token-by-token
decoding; a *frozen* cache is only read, so the Transfusion sampler computes a prompt once and then
runs each denoising step over the image's positions alone.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch


class KVCache:
    """Per-layer keys and values of the positions seen so far (``length`` of them per row)."""

    def __init__(self, n_layers: int):
        self.keys: List[Optional[torch.Tensor]] = [None] * n_layers
        self.values: List[Optional[torch.Tensor]] = [None] * n_layers
        self.document_ids: Optional[torch.Tensor] = None  # [B, S]
        self.span_ids: Optional[torch.Tensor] = None  # [B, S]
        self.length = 0
        self.frozen = False

    def freeze(self) -> "KVCache":
        """From now on forwards read the cache and leave it as it is."""
        self.frozen = True
        return self

    def extend(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The cached keys/values of ``layer`` followed by the new ones ``[B, Hkv, L, hd]``; stored
        unless the cache is frozen."""
        if self.keys[layer] is not None:
            key = torch.cat([self.keys[layer], key], dim=2)
            value = torch.cat([self.values[layer], value], dim=2)
        if not self.frozen:
            self.keys[layer], self.values[layer] = key, value
        return key, value

    def mask_ids(self, document_ids: torch.Tensor, span_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Document and span ids of the cached positions followed by the new ones' ``[B, L]``."""
        if self.document_ids is None:
            return document_ids, span_ids
        return (torch.cat([self.document_ids, document_ids], dim=1),
                torch.cat([self.span_ids, span_ids], dim=1))

    def advance(self, document_ids: torch.Tensor, span_ids: torch.Tensor, new_positions: int) -> None:
        """Record the mask ids of the whole cache after a forward of ``new_positions`` positions."""
        if not self.frozen:
            self.document_ids, self.span_ids = document_ids, span_ids
            self.length += new_positions
