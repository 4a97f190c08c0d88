"""Parameter and FLOP accounting from a :class:`~mot.config.ModelConfig`, without building a model.

Conventions (the same as the paper, Chinchilla, PaLM and torchtitan):

* **Embedding** parameters are the token embedding and the output head. They are two separate
  (untied) ``vocab x d_model`` matrices, shared by every tower. **Non-embedding** parameters are
  everything else: attention, FFN (or MoE), every norm.
* **Active** parameters are those one token touches: the embedding matrices (counted whole, as
  everyone does) plus, for each component, the one weight group its tower uses. For an MoE FFN
  that is the router plus the experts one token uses on average: ``capacity_factor`` experts with
  Expert-Choice routing (capped at ``num_experts``), one with top-1 Token-Choice routing. When
  towers differ in shape (MoT + text MoE), ``active`` is the largest tower's count; the
  ``*_per_tower`` fields hold each tower's.
* **FLOPs** are ``2 x`` multiply-adds. Norms, activations, softmax, rotary embeddings, residual
  adds and the embedding lookup are not counted. See :func:`flops_per_token`.
* The **latent path** of the Transfusion setting (timestep embedding and patch encoder/decoder,
  ``ModelConfig.latent``) is counted apart: it belongs to no tower and is the same for every
  architecture (the paper keeps its U-Net fixed at 0.27B), so it is in ``total`` but neither in
  ``embedding`` nor in ``non_embedding``, and FLOPs per token leave it out.

:func:`verify_parameter_counts` checks the analytic counts against a model built on the meta
device (no memory), group by group, from the parameter names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterable, Tuple

from ..config import SHARED, LatentConfig, ModelConfig

if TYPE_CHECKING:  # keep this module importable (and fast) for counting alone
    from torch import nn


class AccountingError(RuntimeError):
    """The analytic parameter count disagrees with the parameters of a built model."""


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts of one model; see the module docstring for the conventions."""

    total: int
    #: token embedding + output head (separate matrices)
    embedding: int
    non_embedding: int
    #: weight group (a tower name, or ``"shared"`` for a tied component) -> its non-embedding parameters
    non_embedding_per_group: Dict[str, int]
    #: parameters one token uses, for the tower with the most (embedding included)
    active: int
    active_non_embedding: int
    #: tower name -> active parameters of a token of that tower (embedding included)
    active_per_tower: Dict[str, int]
    #: the continuous modality's timestep embedding and patch encoder/decoder (0 without one)
    latent_path: int = 0


@dataclass(frozen=True)
class FlopCounts:
    """FLOPs per token (``2 x`` multiply-adds) at one context length; see :func:`flops_per_token`."""

    context_length: int
    #: forward FLOPs of a token of the most expensive tower
    forward: float
    #: ``3 x forward``: the backward pass costs twice the forward
    training: float
    #: tower name -> forward FLOPs of a token of that tower
    forward_per_tower: Dict[str, float]
    #: the attention-score part of ``forward`` (QK^T and AV), the same for every tower
    attention_forward: float


@dataclass(frozen=True)
class MeasuredCounts:
    """Parameter counts read from a built model's parameter names (:func:`count_model_parameters`)."""

    total: int
    #: parameters outside every per-tower module: the token embedding and the output head
    embedding: int
    #: weight group -> parameters under ``<component>.towers.<group>.``
    non_embedding_per_group: Dict[str, int]
    #: parameters under ``latent_path.``
    latent_path: int = 0


# ----------------------------------------------------------------------- per-layer pieces --

def _norm_params(config: ModelConfig, dim: int) -> int:
    """RMSNorm has a weight; LayerNorm (with bias, as Chameleon) a weight and a bias."""
    return dim * (2 if config.norm_type == "layernorm" else 1)


def _attention_params(config: ModelConfig) -> int:
    """One weight group's fused QKV (``d -> (H + 2*Hkv) * head_dim``) and output projection, no biases."""
    d, hd = config.d_model, config.head_dim
    return d * (config.n_heads + 2 * config.kv_heads) * hd + config.n_heads * hd * d


def _layer_norm_params(config: ModelConfig) -> int:
    """One norm group's norms in one block: attention_norm, ffn_norm and, with QK-norm, q/k norms."""
    count = 2 * _norm_params(config, config.d_model)
    if config.qk_norm:  # one norm over head_dim, shared by all heads, for q and one for k
        count += 2 * _norm_params(config, config.head_dim)
    return count


def _swiglu_params(config: ModelConfig) -> int:
    return 3 * config.d_model * config.ffn_dim  # gate and up d -> F, down F -> d


def _experts_per_token(config: ModelConfig) -> float:
    """Experts one token passes through on average (each expert weighs one SwiGLU)."""
    moe = config.moe
    if moe.routing == "expert_choice":
        # E experts x ceil(n * cf / E) slots ~ n * cf; an expert takes a token at most once.
        return min(moe.capacity_factor, moe.num_experts)
    return 1.0  # top-1 token choice


def _ffn_params(config: ModelConfig, group: str, experts: float) -> float:
    """One FFN group in one block, counting ``experts`` experts if the group is an MoE."""
    if group not in config.moe.towers:
        return _swiglu_params(config)
    router = config.d_model * config.moe.num_experts
    return router + experts * _swiglu_params(config)


def _group_of(config: ModelConfig, component: str, tower: str) -> str:
    """The weight group of ``component`` that tower ``tower`` uses."""
    groups = config.groups(component)
    return tower if tower in groups else groups[0]


def _active_matmul_params(config: ModelConfig, tower: str) -> float:
    """Non-embedding matmul weights (no norms) one token of ``tower`` uses, all layers."""
    ffn = _ffn_params(config, _group_of(config, "ffn", tower), _experts_per_token(config))
    return config.n_layers * (_attention_params(config) + ffn)


def _res_block_params(channels_in: int, channels_out: int, time_dim: int) -> int:
    """``patch_unet.ResBlock``: two GroupNorms, two 3x3 convs, the timestep projection, a 1x1 skip."""
    count = 2 * channels_in + 9 * channels_in * channels_out + channels_out  # norm1, conv1
    count += time_dim * channels_out + channels_out  # timestep projection
    count += 2 * channels_out + 9 * channels_out * channels_out + channels_out  # norm2, conv2
    if channels_in != channels_out:
        count += channels_in * channels_out + channels_out
    return count


def latent_path_params(latent: LatentConfig, dim: int) -> int:
    """Parameters of ``latent_patches.LatentPath`` (0 when the config has no continuous path)."""
    if not latent.enabled:
        return 0
    count = latent.timestep_features * dim + dim + dim * dim + dim  # the timestep MLP
    if latent.encoder == "linear":
        size = latent.channels * latent.patch_size ** 2
        return count + (size * dim + dim) + (dim * size + size)
    widths, blocks, channels = list(latent.unet_channels), latent.unet_res_blocks, latent.channels
    count += 9 * channels * widths[0] + widths[0]  # conv_in
    for width in widths:
        count += blocks * _res_block_params(width, width, dim)  # down
        first = 2 * width if latent.unet_skips else width  # the skip is concatenated to the up block's input
        count += _res_block_params(first, width, dim) + (blocks - 1) * _res_block_params(width, width, dim)  # up
    for a, b in zip(widths, widths[1:]):
        count += (9 * a * b + b) + (9 * b * a + a)  # downsample, upsample
    count += (widths[-1] * dim + dim) + (dim * widths[-1] + widths[-1])  # to_model, from_model
    return count + 2 * widths[0] + 9 * widths[0] * channels + channels  # norm_out, conv_out


# ---------------------------------------------------------------------------- the counts --

def count_parameters(config: ModelConfig) -> ParameterCounts:
    """Analytic parameter counts of the model ``config`` describes (equal to the built model's numel)."""
    layers = config.n_layers
    per_group: Dict[str, int] = {}

    def add(groups: Iterable[str], count: int) -> None:
        for group in groups:
            per_group[group] = per_group.get(group, 0) + count

    # One norm group's weights: each block's norms plus the final norm, which belongs to them too.
    norms = layers * _layer_norm_params(config) + _norm_params(config, config.d_model)
    add(config.groups("norms"), norms)
    add(config.groups("attention"), layers * _attention_params(config))
    for group in config.groups("ffn"):
        add([group], layers * int(_ffn_params(config, group, config.moe.num_experts)))

    order = [*config.tower_names, SHARED]
    per_group = {group: per_group[group] for group in order if group in per_group}
    # the embedding and one output head per head group (one, unless the head is untied); a token uses one of each
    embedding = (1 + len(config.groups("head"))) * config.vocab_size * config.d_model
    active_embedding = 2 * config.vocab_size * config.d_model
    non_embedding = sum(per_group.values())

    active_per_tower = {tower: active_embedding + norms + round(_active_matmul_params(config, tower))
                        for tower in config.tower_names}
    active = max(active_per_tower.values())
    latent = latent_path_params(config.latent, config.d_model)
    return ParameterCounts(total=embedding + non_embedding + latent, embedding=embedding,
                           non_embedding=non_embedding, non_embedding_per_group=per_group, active=active,
                           active_non_embedding=active - active_embedding, active_per_tower=active_per_tower,
                           latent_path=latent)


def block_parameters(config: ModelConfig) -> int:
    """Parameters inside the transformer blocks (every tower, expert and router); the rest of the
    model (embedding, final norm, heads, latent path) sits outside them (what FSDP2's root holds)."""
    final_norms = len(config.groups("norms")) * _norm_params(config, config.d_model)
    return count_parameters(config).non_embedding - final_norms


def flops_per_token(config: ModelConfig, context_length: int) -> FlopCounts:
    """Forward and training FLOPs per token for sequences of ``context_length`` tokens.

    ``forward = 2 * (active matmul weights + d_model * vocab_size) + 4 * n_layers * S * n_heads * head_dim``:

    * every active non-embedding matmul weight (QKV, O, the FFN, or the MoE router plus the experts
      a token uses on average) is one multiply-add per token, and so is the output head;
      the embedding lookup, norms and element-wise work are not counted;
    * attention scores: ``Q K^T`` and ``softmax(.) V`` are ``2 * S * head_dim`` multiply-adds per
      query head and layer, over the full ``S x S`` square, *not* halved for the causal mask
      (PaLM appendix B, torchtitan's ``6N + 12 L d S``; a fused kernel skipping masked tiles does
      less work, so MFU computed from this count is the convention's, not the hardware's);
    * ``training = 3 * forward`` (backward: gradients of activations and of weights).

    Towers of different shapes (MoT + text MoE) cost differently; ``forward`` is the largest.
    """
    if context_length <= 0:
        raise ValueError(f"context_length={context_length!r}: must be a positive number of tokens")
    head = config.d_model * config.vocab_size
    attention = 4.0 * config.n_layers * context_length * config.n_heads * config.head_dim
    per_tower = {tower: 2.0 * (_active_matmul_params(config, tower) + head) + attention
                 for tower in config.tower_names}
    forward = max(per_tower.values())
    return FlopCounts(context_length=context_length, forward=forward, training=3.0 * forward,
                      forward_per_tower=per_tower, attention_forward=attention)


# ------------------------------------------------------------------ the paper's section 6.1 --

def paper_moe_added_params_per_layer(d: int, num_experts: int) -> int:
    """Section 6.1: parameters an ``E``-expert MoE FFN adds to a dense layer, ``3(E-1)d^2 + Ed``.

    Assumes the FFN is SwiGLU with hidden width ``d`` (``|FFN| = 3d^2``) and a bias-free router
    ``d -> E``; norms are ignored. (The paper writes ``|ROUTER| = K x D`` but then uses ``E D``.)
    """
    return 3 * (num_experts - 1) * d * d + num_experts * d


def paper_mot_added_params_per_layer(d: int, num_towers: int) -> int:
    """Section 6.1: parameters untying ``K`` modalities adds to a dense layer, ``7(K-1)d^2``.

    ``|ATTN| = 4d^2`` (Q, K, V, O) plus ``|FFN| = 3d^2`` (SwiGLU of width ``d``) per extra tower;
    norms are ignored.
    """
    return 7 * (num_towers - 1) * d * d


# ------------------------------------------------------------------- against a real model --

def _group_from_name(name: str) -> str | None:
    """``blocks.0.ffn.towers.text.gate.weight`` -> ``text``; ``None`` outside per-tower modules."""
    parts = name.split(".")
    if "towers" not in parts:
        return None
    index = parts.index("towers")  # component names are never "towers", so the first one is it
    return parts[index + 1]


def count_model_parameters(model: "nn.Module") -> MeasuredCounts:
    """Group a built model's parameters by weight group, read from their names."""
    per_group: Dict[str, int] = {}
    embedding = total = latent = 0
    for name, parameter in model.named_parameters():
        count = parameter.numel()
        total += count
        group = _group_from_name(name)
        if name.startswith("latent_path."):
            latent += count
        elif group is None or name.startswith("head."):  # an untied head is per tower, but an embedding
            embedding += count
        else:
            per_group[group] = per_group.get(group, 0) + count
    return MeasuredCounts(total=total, embedding=embedding, non_embedding_per_group=per_group, latent_path=latent)


def verify_parameter_counts(config: ModelConfig, model: "nn.Module | None" = None) -> ParameterCounts:
    """Analytic counts of ``config``, checked against ``model`` (default: built on the meta device).

    Raises :class:`AccountingError` naming every quantity that differs.
    """
    if model is None:
        from .transformer import build_model  # torch is needed only here

        model = build_model(config, device="meta")
    counts = count_parameters(config)
    measured = count_model_parameters(model)
    pairs: Tuple[Tuple[str, object, object], ...] = (
        ("total", counts.total, measured.total),
        ("embedding", counts.embedding, measured.embedding),
        ("non_embedding_per_group", counts.non_embedding_per_group, measured.non_embedding_per_group),
        ("latent_path", counts.latent_path, measured.latent_path),
    )
    wrong = [f"{what}: analytic {want} != model {got}" for what, want, got in pairs if want != got]
    if wrong:
        raise AccountingError("parameter accounting disagrees with the model: " + "; ".join(wrong))
    return counts


def format_number(value: float) -> str:
    """A count in powers of 1000: ``7_011_000_000`` -> ``7.01B``, ``443_100_000`` -> ``443.1M``."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            digits = 2 if abs(value) < 10 * scale else 1
            return f"{value / scale:.{digits}f}{suffix}"
    return f"{value:g}"
