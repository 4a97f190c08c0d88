"""Attention masks as data (docs/design.md invariant 5).

A batch describes its mask with two optional ``[B, L]`` integer tensors instead of an ``L x L``
matrix. Query q may attend to key k when they are in the same document and either k is not later
than q (causal) or both lie in the same bidirectional span (an image in the Transfusion setting):

    allowed(q, k) = doc[q] == doc[k]  and  (k <= q  or  (span[q] == span[k] != 0))

Each attention backend turns this description into its own form, once per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class MaskSpec:
    """``document_ids [B, L]``: packed-document id of each token (``None``: one document per row).
    ``span_ids [B, L]``: bidirectional-span id of each token, 0 outside spans (``None``: no spans).
    """

    document_ids: Optional[torch.Tensor] = None
    span_ids: Optional[torch.Tensor] = None

    @property
    def is_plain_causal(self) -> bool:
        return self.document_ids is None and self.span_ids is None

    def allowed(self, q_len: int, kv_len: int, batch_size: int, device: torch.device) -> torch.Tensor:
        """The dense boolean mask ``[B, q_len, kv_len]``; queries are the last q_len positions."""
        q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
        k_pos = torch.arange(kv_len, device=device)
        allowed = (k_pos[None, :] <= q_pos[:, None]).expand(batch_size, q_len, kv_len)
        if self.span_ids is not None:
            span_q, span_k = self.span_ids[:, -q_len:, None], self.span_ids[:, None, :]
            allowed = allowed | ((span_q == span_k) & (span_q != 0))
        if self.document_ids is not None:
            allowed = allowed & (self.document_ids[:, -q_len:, None] == self.document_ids[:, None, :])
        return allowed


def positions_from_documents(document_ids: torch.Tensor) -> torch.Tensor:
    """Positions ``[B, L]`` that restart at 0 at every document boundary (no host sync)."""
    batch_size, seq_len = document_ids.shape
    index = torch.arange(seq_len, device=document_ids.device).expand(batch_size, seq_len)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - start_index
