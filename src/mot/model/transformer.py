"""The MoT model: shared token embedding -> MoT blocks -> per-tower final norm -> shared head."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

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
from .layers import SwiGLU, make_norm, rotary_cos_sin
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
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # the continuous modality's patch encoder/decoder: outside the towers, like the embedding
        self.latent_path = LatentPath(config.latent, config.d_model) if config.latent.enabled else None
        self.backend = get_backend(config.attention_backend)
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights, unit norms; output projections scaled by 1/sqrt(2*layers)."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, ExpertsFFN):
                nn.init.normal_(module.w_gate, std=std)
                nn.init.normal_(module.w_up, std=std)
                nn.init.normal_(module.w_down, std=residual_std)
            elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
                module.reset_parameters()
        for block in self.blocks:  # the projections that write into the residual stream
            for out in block.attention.out.towers.values():
                nn.init.normal_(out.weight, std=residual_std)
            for ffn in block.ffn.towers.values():
                if isinstance(ffn, SwiGLU):
                    nn.init.normal_(ffn.down.weight, std=residual_std)

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
        check_shapes(self.config, tokens, modality_ids, positions=positions,
                     document_ids=document_ids, span_ids=span_ids)
        check_latent_shapes(self.config, latents, latent_starts, timesteps)
        # Any integer dtype is taken (int32 from numpy, uint8 from a compact file): the embedding
        # needs int64 indices, and range checks in int8 would wrap. A no-op for int64, no host sync.
        tokens, modality_ids = tokens.long(), modality_ids.long()
        positions, document_ids, span_ids, latent_starts, timesteps = (
            None if ids is None else ids.long()
            for ids in (positions, document_ids, span_ids, latent_starts, timesteps))
        batch, length = tokens.shape
        past = cache.length if cache is not None else 0
        if past + length > self.config.max_seq_len:
            raise InputError(f"{past} cached + {length} new positions exceed max_seq_len={self.config.max_seq_len}")
        if cache is None:
            documents, spans = document_ids, span_ids
        else:  # the new positions' mask ids continue the cached ones
            zeros = torch.zeros_like(tokens)
            documents, spans = cache.mask_ids(document_ids if document_ids is not None else zeros,
                                              span_ids if span_ids is not None else zeros)
        if plan is None:
            check_values(self.config, tokens, modality_ids, positions)
            check_mask_ids(documents, spans, cached=past)
            if latents is not None:
                check_latent_spans(self.config, modality_ids, latents, latent_starts)
            plan = self.plan_for(modality_ids)
        elif (plan.batch_size, plan.seq_len) != (batch, length):
            raise InputError(f"routing plan is for a [{plan.batch_size}, {plan.seq_len}] batch, "
                             f"tokens are {list(tokens.shape)}")
        if positions is None:
            positions = (positions_from_documents(document_ids) if document_ids is not None and cache is None
                         else torch.arange(past, past + length, device=tokens.device).expand(batch, length))

        # The residual stream: one part [n_t, D] per tower, each tower's tokens in sequence order.
        if latents is None:
            parts = [self.embed(ids) for ids in split_by_tower(tokens.reshape(-1), plan)]
        else:
            stream = self.embed(tokens.reshape(-1))  # [B*L, D]
            vectors, latent_state = self.latent_path.encode(latents, timesteps)  # [N, P, D]
            patch_rows = self._patch_rows(latent_starts, vectors.shape[1], length)  # [N*P]
            stream = stream.index_copy(0, patch_rows, vectors.reshape(-1, vectors.shape[-1]).to(stream.dtype))
            parts = split_by_tower(stream, plan)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, parts[0].dtype)
        mask = self.backend.prepare(MaskSpec(documents, spans), batch, length, past + length,
                                    parts[0].dtype, tokens.device)
        ctx = AttentionContext(plan, cos, sin, self.backend, mask, cache)

        def in_sequence_order(parts: List[torch.Tensor]) -> torch.Tensor:
            return merge_towers(parts, plan).view(batch, length, -1)

        states = [in_sequence_order(parts)] if output_layer_states else None
        for block in self.blocks:
            parts = block(parts, ctx)
            if states is not None:
                states.append(in_sequence_order(parts))
        if cache is not None:
            cache.advance(documents, spans, length)
        hidden = in_sequence_order(self.final_norm(parts))
        prediction = None
        if latents is not None:
            patch_hidden = hidden.reshape(batch * length, -1).index_select(0, patch_rows)
            prediction = self.latent_path.decode(patch_hidden.view(*vectors.shape[:2], hidden.shape[-1]), latent_state)
        return ModelOutput(self.head(hidden), hidden, tuple(states) if states is not None else None, prediction)

    @staticmethod
    def _patch_rows(latent_starts: torch.Tensor, patches: int, length: int) -> torch.Tensor:
        """Flat indices ``[N * P]`` (into ``B * L``) of every image's patch positions, image by image."""
        first = latent_starts[:, 0] * length + latent_starts[:, 1]  # [N]
        return (first[:, None] + torch.arange(patches, device=latent_starts.device)).reshape(-1)


def build_model(config: ModelConfig, device: torch.device | str | None = None) -> MoTModel:
    """Build the model; ``device="meta"`` allocates nothing (for counting and dry runs)."""
    with torch.device(device if device is not None else "cpu"):
        return MoTModel(config)
