"""A key/value cache, so generation does not recompute what earlier positions already computed.

Keys and values of earlier positions do not change when later positions are added (the mask is
causal outside images), so the model keeps them per layer, after the rotary rotation, in sequence
order: ``[B, kv_heads, S, head_dim]``. With them it keeps the earlier positions' document and span
ids, which the mask of later queries needs.

Two uses: ``append`` (the default) adds each forward's positions to the cache, for token-by-token
decoding; a *frozen* cache is only read, so the Transfusion sampler computes a prompt once and then
runs each denoising step over the image's positions alone.

Rows are right-aligned: a row shorter than the cache is left-padded with positions of a document of
their own (``pad_document``), which no query attends to. So caches of different lengths can be
:meth:`joined <concatenate>` into one batch and rows can :meth:`leave <select>` it, which is how a
server batches requests that arrive and end at different times.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

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

    def select(self, rows: torch.Tensor, length: int) -> "KVCache":
        """A cache of the rows ``rows`` (``[R]`` long, on the cache's device) keeping only the last
        ``length`` positions (the longest kept row's; the columns before are padding in every kept row)."""
        if not 0 < length <= self.length:
            raise ValueError(f"length={length}: must be in [1, {self.length}]")
        cache = KVCache(len(self.keys))
        start = self.length - length
        cache.keys = [k.index_select(0, rows)[:, :, start:] for k in self.keys]
        cache.values = [v.index_select(0, rows)[:, :, start:] for v in self.values]
        cache.document_ids = self.document_ids.index_select(0, rows)[:, start:]
        cache.span_ids = self.span_ids.index_select(0, rows)[:, start:]
        cache.length = length
        return cache

    @staticmethod
    def concatenate(caches: Sequence["KVCache"], pad_document: int) -> "KVCache":
        """One cache holding the rows of ``caches`` in order, each left-padded to the longest one's
        length with zero keys and values in document ``pad_document`` (span 0)."""
        length = max(c.length for c in caches)
        joined = KVCache(len(caches[0].keys))

        def padded(tensor: torch.Tensor, missing: int, value: int = 0) -> torch.Tensor:
            """``tensor`` with ``missing`` positions before its own: keys/values ``[B, H, S, hd]``, ids ``[B, S]``."""
            after_sequence = (0, 0) if tensor.dim() == 4 else ()
            return torch.nn.functional.pad(tensor, after_sequence + (missing, 0), value=value)

        for layer in range(len(joined.keys)):
            joined.keys[layer] = torch.cat([padded(c.keys[layer], length - c.length) for c in caches])
            joined.values[layer] = torch.cat([padded(c.values[layer], length - c.length) for c in caches])
        joined.document_ids = torch.cat([padded(c.document_ids, length - c.length, pad_document) for c in caches])
        joined.span_ids = torch.cat([padded(c.span_ids, length - c.length) for c in caches])
        joined.length = length
        return joined

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
