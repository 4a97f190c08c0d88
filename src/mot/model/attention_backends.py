"""Attention kernels behind one interface: ``prepare`` a mask once per batch, then ``attend``.

* ``reference``: the dense boolean mask and an explicit softmax, in fp32; the definition the
  others are tested against.
* ``sdpa``: ``scaled_dot_product_attention``; the ``is_causal`` fast path when the mask is plain
  causal, otherwise an additive mask built once per batch (SDPA would convert a boolean mask on
  every call).
* ``flex``: FlexAttention with a block mask built once per batch, so fully masked tiles are
  skipped. Needs a torch with ``torch.nn.attention.flex_attention``; on CPU it has no backward.

Queries are the last ``q_len`` positions of the keys, which leaves room for a KV cache.
Shapes: q ``[B, H, Lq, D]``, k and v ``[B, Hkv, Lk, D]`` with ``H % Hkv == 0``.
"""

from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F

from .masks import MaskSpec


class ReferenceAttention:
    name = "reference"

    def prepare(self, spec: MaskSpec, batch_size: int, q_len: int, kv_len: int,
                dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return spec.allowed(q_len, kv_len, batch_size, device)[:, None]  # [B, 1, Lq, Lk]

    def attend(self, q, k, v, allowed: torch.Tensor) -> torch.Tensor:
        groups = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(groups, dim=1).float()
        v = v.repeat_interleave(groups, dim=1).float()
        scores = q.float() @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        scores = scores.masked_fill(~allowed, float("-inf"))
        return (scores.softmax(dim=-1) @ v).to(q.dtype)


class SDPAAttention:
    name = "sdpa"

    def prepare(self, spec: MaskSpec, batch_size: int, q_len: int, kv_len: int,
                dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        if spec.is_plain_causal and q_len == kv_len:
            return None  # the kernel's own causal path
        allowed = spec.allowed(q_len, kv_len, batch_size, device)[:, None]
        bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return bias.masked_fill_(~allowed, float("-inf"))

    def attend(self, q, k, v, bias: torch.Tensor | None) -> torch.Tensor:
        if bias is not None and bias.dtype != q.dtype:  # e.g. bf16 queries under autocast
            bias = bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bias is None,
                                              enable_gqa=q.shape[1] != k.shape[1])


class FlexAttention:
    name = "flex"

    def __init__(self) -> None:
        from torch.nn.attention import flex_attention as flex

        self._flex = flex
        self._compiled = None

    def prepare(self, spec: MaskSpec, batch_size: int, q_len: int, kv_len: int,
                dtype: torch.dtype, device: torch.device):
        offset = kv_len - q_len
        docs, spans = spec.document_ids, spec.span_ids

        def mask_mod(b, h, q_idx, kv_idx):
            q_pos = q_idx + offset
            allowed = kv_idx <= q_pos
            if spans is not None:
                allowed = allowed | ((spans[b, q_pos] == spans[b, kv_idx]) & (spans[b, q_pos] != 0))
            if docs is not None:
                allowed = allowed & (docs[b, q_pos] == docs[b, kv_idx])
            return allowed

        return self._flex.create_block_mask(mask_mod, batch_size, None, q_len, kv_len, device=device)

    def attend(self, q, k, v, block_mask) -> torch.Tensor:
        kernel = self._flex.flex_attention
        if q.is_cuda:  # uncompiled FlexAttention materialises the scores; compiled it is fused
            if self._compiled is None:
                self._compiled = torch.compile(self._flex.flex_attention, dynamic=False)
            kernel = self._compiled
        return kernel(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])


def flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


_BACKENDS: Dict[str, Any] = {"reference": ReferenceAttention, "sdpa": SDPAAttention, "flex": FlexAttention}


def get_backend(name: str):
    """The backend called ``name``; FlexAttention raises a clear error where torch lacks it."""
    if name not in _BACKENDS:
        raise ValueError(f"attention_backend={name!r}: expected one of {sorted(_BACKENDS)}")
    if name == "flex" and not flex_available():
        raise RuntimeError(f"attention_backend='flex' needs torch.nn.attention.flex_attention, "
                           f"which torch {torch.__version__} does not have; use 'sdpa'")
    return _BACKENDS[name]()
