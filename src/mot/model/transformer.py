"""The MoT model: shared token embedding -> MoT blocks -> per-tower final norm -> shared head."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from ..config import ConfigError, ModelConfig, load_config
from ..io.weights import CONFIG_FILE, CheckpointError, load_weights_into, read_weights, save_pretrained
from .attention import AttentionContext
from .attention_backends import get_backend
from .block import MoTBlock
from .inputs import (InputError, check_latent_shapes, check_latent_spans, check_mask_ids, check_shapes,
                     check_values)
from .kv_cache import KVCache
from .latent_patches import LatentPath
from .layers import make_norm, rotary_cos_sin
from .masks import MaskSpec, positions_from_documents
from .moe import ExpertsFFN
from .routing import RoutingPlan, build_routing_plan, merge_towers, split_by_tower
from .towers import PerTower


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, L, vocab]
    hidden: torch.Tensor  # [B, L, D] after the final norm
    #: with ``output_layer_states=True``: the residual stream after the embedding and each block
    layer_states: Optional[Tuple[torch.Tensor, ...]] = None
    #: with ``latents``: the predicted noise of each latent ``[N, C, H, W]``
    latent_prediction: Optional[torch.Tensor] = None


class MoTModel(nn.Module):
    """A Mixture-of-Transformers (dense when every modality maps to one tower)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(MoTBlock(config, index) for index in range(config.n_layers))
        self.final_norm = PerTower(config.groups("norms"),
                                   lambda _: make_norm(config.norm_type, config.d_model, config.norm_eps))
        # one head shared by every tower (the paper), or one per tower with ``untied: [..., head]``
        heads = config.groups("head")
        self.head = (PerTower(heads, lambda _: nn.Linear(config.d_model, config.vocab_size, bias=False))
                     if len(heads) > 1 else nn.Linear(config.d_model, config.vocab_size, bias=False))
        # the continuous modality's patch encoder/decoder: outside the towers, like the embedding
        self.latent_path = LatentPath(config.latent, config.d_model) if config.latent.enabled else None
        self.backend = get_backend(config.attention_backend)
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights, unit norms; the projections that write into the residual stream
        (attention output, FFN down) Normal(0, init_std / sqrt(2 * n_layers)). Each module draws its own."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.embed.weight, std=std)
        for block in self.blocks:
            block.reset_parameters(std, residual_std)
        self.final_norm.reset_parameters()
        for head in self.output_heads():
            nn.init.normal_(head.weight, std=std)
        if self.latent_path is not None:
            self.latent_path.reset_parameters(std)
        # The attention and SwiGLU output weights are drawn once more, after every other weight: mot
        # always drew them in this order, and the order of draws decides the weights a seed gives.
        for block in self.blocks:
            block.redraw_output_weights(residual_std)

    def output_heads(self) -> List[nn.Linear]:
        """The output head, or the heads of every tower (in tower order) when the head is untied."""
        return list(self.head.towers.values()) if isinstance(self.head, PerTower) else [self.head]

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` + ``model.safetensors`` + ``checksums.json`` (see :mod:`mot.io.weights`)."""
        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, device: torch.device | str = "cpu", *, verify: bool = True) -> "MoTModel":
        """Load a model written by :meth:`save_pretrained`; every tensor must match the config's architecture.

        With ``verify`` (the default) ``model.safetensors`` must have the size and SHA-256 recorded
        in ``checksums.json``, else :class:`~mot.io.CheckpointError` names the file. ``verify=False``
        skips that check, for weights edited on purpose or saved before mot recorded checksums."""
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist: not a saved mot model directory")
        try:
            config = load_config(ModelConfig, path)
        except ConfigError as error:
            raise CheckpointError(f"{path}: {error}") from None
        state = read_weights(directory, f"MoTModel.from_pretrained('{directory}', verify=False)",
                             verify=verify, device=device)
        model = build_model(config, device="meta").to_empty(device=device)
        load_weights_into(model, state, directory)
        return model

    @contextmanager
    def causal_routing(self) -> Iterator[None]:
        """While inside, every MoE FFN routes each token by itself (top-1 token choice, no host sync), so a
        token's output depends on no later token and no other row: what decoding with a KV cache needs;
        outside, training-time routing (see ``moe.ExpertsFFN.causal_forward``)."""
        if not hasattr(self, "_experts"):  # found once: decoding enters this every step
            self._experts = [module for module in self.modules() if isinstance(module, ExpertsFFN)]
        experts = self._experts
        previous = [module.causal for module in experts]
        for module in experts:
            module.causal = True
        try:
            yield
        finally:
            for module, causal in zip(experts, previous):
                module.causal = causal

    @contextmanager
    def padded_towers(self) -> Iterator[None]:
        """While inside, each untied component pads its towers' parts to the largest and runs them as
        one batched matmul (the paper's section 6.3 alternative to grouping; inference only: the
        weights are used detached). Outputs equal the grouped way's up to rounding."""
        modules = [module for module in self.modules() if isinstance(module, PerTower) and not module.shared]
        for module in modules:
            module.padded = True
        try:
            yield
        finally:
            for module in modules:
                module.padded = False

    def plan_for(self, modality_ids: torch.Tensor) -> RoutingPlan:
        """The routing plan for ``modality_ids [B, L]``, built on the host."""
        plan = build_routing_plan(modality_ids.cpu(), self.config.modality_tower_index)
        return plan.to(modality_ids.device)

    def forward(self, tokens: torch.Tensor, modality_ids: torch.Tensor, *,
                positions: Optional[torch.Tensor] = None, document_ids: Optional[torch.Tensor] = None,
                span_ids: Optional[torch.Tensor] = None, plan: Optional[RoutingPlan] = None,
                latents: Optional[torch.Tensor] = None, latent_starts: Optional[torch.Tensor] = None,
                timesteps: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None,
                output_layer_states: bool = False) -> ModelOutput:
        """``tokens``, ``modality_ids`` (and the optional metadata) are ``[B, L]`` integer tensors.

        ``positions`` default to restarting at each document (``document_ids``), else ``0..L-1``
        (after the cached positions, with a ``cache``). ``span_ids`` mark bidirectional spans (see
        ``masks.MaskSpec``). Without ``plan`` the model validates the inputs and builds the routing
        plan itself (a host sync on GPU).

        The continuous path (``config.latent``): ``latents [N, C, H, W]`` are noisy latents at
        ``timesteps [N]``; image n's ``P`` patch vectors replace the embeddings of the ``P``
        positions from ``latent_starts[n] = (row, column)`` on, and the output's
        ``latent_prediction`` is the predicted noise. With a ``cache`` (``kv_cache.KVCache``) the
        positions follow the cached ones and attend to them.
        """
        self._check_shapes(tokens, modality_ids, positions, document_ids, span_ids,
                           latents, latent_starts, timesteps, cache)
        tokens, modality_ids, positions, document_ids, span_ids, latent_starts, timesteps = _as_int64(
            tokens, modality_ids, positions, document_ids, span_ids, latent_starts, timesteps)
        documents, spans = _mask_ids(tokens, document_ids, span_ids, cache)
        if plan is None:
            self._check_values(tokens, modality_ids, positions, documents, spans, latents, latent_starts, cache)
            plan = self.plan_for(modality_ids)
        elif (plan.batch_size, plan.seq_len) != tuple(tokens.shape):
            raise InputError(f"routing plan is for a [{plan.batch_size}, {plan.seq_len}] batch, "
                             f"tokens are {list(tokens.shape)}")
        parts, splice = self._embed(tokens, plan, latents, latent_starts, timesteps)
        ctx = self._attention_context(tokens, plan, positions, document_ids, documents, spans, cache, parts[0].dtype)
        parts, states = self._run_blocks(parts, ctx, output_layer_states)
        if cache is not None:
            cache.advance(documents, spans, tokens.shape[1])
        parts = self.final_norm(parts)
        hidden = _in_sequence_order(parts, plan)
        prediction = self._decode_patches(hidden, splice) if splice is not None else None
        logits = _in_sequence_order(self.head(parts), plan) if isinstance(self.head, PerTower) else self.head(hidden)
        return ModelOutput(logits, hidden, states, prediction)

    def _check_shapes(self, tokens: torch.Tensor, modality_ids: torch.Tensor, positions: Optional[torch.Tensor],
                      document_ids: Optional[torch.Tensor], span_ids: Optional[torch.Tensor],
                      latents: Optional[torch.Tensor], latent_starts: Optional[torch.Tensor],
                      timesteps: Optional[torch.Tensor], cache: Optional[KVCache]) -> None:
        """Check what the host knows without reading a tensor: shapes, dtypes, lengths (the cache's included)."""
        check_shapes(self.config, tokens, modality_ids, positions=positions,
                     document_ids=document_ids, span_ids=span_ids)
        check_latent_shapes(self.config, latents, latent_starts, timesteps)
        past, length = (cache.length if cache is not None else 0), tokens.shape[1]
        if past + length > self.config.max_seq_len:
            raise InputError(f"{past} cached + {length} new positions exceed max_seq_len={self.config.max_seq_len}")

    def _check_values(self, tokens: torch.Tensor, modality_ids: torch.Tensor, positions: Optional[torch.Tensor],
                      documents: Optional[torch.Tensor], spans: Optional[torch.Tensor],
                      latents: Optional[torch.Tensor], latent_starts: Optional[torch.Tensor],
                      cache: Optional[KVCache]) -> None:
        """Check the values of the inputs (host reads: only when the model builds the routing plan itself).
        ``documents`` and ``spans`` are the mask ids of the cached positions followed by the new ones."""
        check_values(self.config, tokens, modality_ids, positions)
        check_mask_ids(documents, spans, cached=cache.length if cache is not None else 0)
        if latents is not None:
            check_latent_spans(self.config, modality_ids, latents, latent_starts)

    def _embed(self, tokens: torch.Tensor, plan: RoutingPlan, latents: Optional[torch.Tensor],
               latent_starts: Optional[torch.Tensor],
               timesteps: Optional[torch.Tensor]) -> Tuple[List[torch.Tensor], Optional[_LatentSplice]]:
        """The residual stream's first value: one part ``[n_t, D]`` per tower, each tower's tokens in
        sequence order. With ``latents``, their patch vectors replace the embeddings of the image
        positions, and the splice says where they went (for :meth:`_decode_patches`)."""
        if latents is None:
            return [self.embed(ids) for ids in split_by_tower(tokens.reshape(-1), plan)], None
        stream = self.embed(tokens.reshape(-1))  # [B*L, D]
        vectors, decoder_state = self.latent_path.encode(latents, timesteps)  # [N, P, D]
        rows = self._patch_rows(latent_starts, vectors.shape[1], tokens.shape[1])  # [N*P]
        stream = stream.index_copy(0, rows, vectors.reshape(-1, vectors.shape[-1]).to(stream.dtype))
        return split_by_tower(stream, plan), _LatentSplice(rows, vectors.shape[0], vectors.shape[1], decoder_state)

    def _decode_patches(self, hidden: torch.Tensor, splice: _LatentSplice) -> torch.Tensor:
        """The predicted noise ``[N, C, H, W]`` from the final hidden states ``[B, L, D]`` of the patches."""
        patch_hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, splice.rows)
        return self.latent_path.decode(patch_hidden.view(splice.images, splice.patches, hidden.shape[-1]),
                                       splice.decoder_state)

    def _attention_context(self, tokens: torch.Tensor, plan: RoutingPlan, positions: Optional[torch.Tensor],
                           document_ids: Optional[torch.Tensor], documents: Optional[torch.Tensor],
                           spans: Optional[torch.Tensor], cache: Optional[KVCache],
                           dtype: torch.dtype) -> AttentionContext:
        """Rotary angles of the positions (defaulted as :meth:`forward` says) and the backend's mask,
        built once for every layer. ``documents``/``spans`` include the cached positions' ids."""
        batch, length = tokens.shape
        past = cache.length if cache is not None else 0
        if positions is None:
            positions = (positions_from_documents(document_ids) if document_ids is not None and cache is None
                         else torch.arange(past, past + length, device=tokens.device).expand(batch, length))
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, dtype)
        mask = self.backend.prepare(MaskSpec(documents, spans), batch, length, past + length, dtype, tokens.device)
        return AttentionContext(plan, cos, sin, self.backend, mask, cache)

    def _run_blocks(self, parts: List[torch.Tensor], ctx: AttentionContext,
                    keep_states: bool) -> Tuple[List[torch.Tensor], Optional[Tuple[torch.Tensor, ...]]]:
        """The residual stream through every block; with ``keep_states`` also the stream ``[B, L, D]``
        after the embedding and after each block."""
        states = [_in_sequence_order(parts, ctx.plan)] if keep_states else None
        for block in self.blocks:
            parts = block(parts, ctx)
            if states is not None:
                states.append(_in_sequence_order(parts, ctx.plan))
        return parts, tuple(states) if states is not None else None

    @staticmethod
    def _patch_rows(latent_starts: torch.Tensor, patches: int, length: int) -> torch.Tensor:
        """Flat indices ``[N * P]`` (into ``B * L``) of every image's patch positions, image by image."""
        first = latent_starts[:, 0] * length + latent_starts[:, 1]  # [N]
        return (first[:, None] + torch.arange(patches, device=latent_starts.device)).reshape(-1)


class _LatentSplice(NamedTuple):
    """Where :meth:`MoTModel._embed` put the patch vectors of ``N`` images of ``P`` patches each."""

    rows: torch.Tensor  # [N * P] flat indices into the B * L positions
    images: int
    patches: int
    decoder_state: Any  # what LatentPath.decode needs besides the hidden states


def _as_int64(*tensors: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
    """The integer inputs as int64 (``None`` stays ``None``).

    Any integer dtype is taken (int32 from numpy, uint8 from a compact file): the embedding needs int64
    indices, and range checks in int8 would wrap. A no-op for int64, no host sync.
    """
    return tuple(None if ids is None else ids.long() for ids in tensors)


def _mask_ids(tokens: torch.Tensor, document_ids: Optional[torch.Tensor], span_ids: Optional[torch.Tensor],
              cache: Optional[KVCache]) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The document and span ids the mask needs: with a cache, the cached positions' then the new ones'."""
    if cache is None:
        return document_ids, span_ids
    zeros = torch.zeros_like(tokens)
    return cache.mask_ids(document_ids if document_ids is not None else zeros,
                          span_ids if span_ids is not None else zeros)


def _in_sequence_order(parts: List[torch.Tensor], plan: RoutingPlan) -> torch.Tensor:
    """The residual stream's parts (one per tower) as one ``[B, L, D]`` tensor in sequence order."""
    return merge_towers(parts, plan).view(plan.batch_size, plan.seq_len, -1)


def build_model(config: ModelConfig, device: torch.device | str | None = None) -> MoTModel:
    """Build the model; ``device="meta"`` allocates nothing (for counting and dry runs)."""
    with torch.device(device if device is not None else "cpu"):
        return MoTModel(config)
