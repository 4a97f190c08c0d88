"""``mot train --dry-run``: check a recipe and estimate its cost without allocating the model.

The model is built on the meta device (no memory) and its parameters are checked against the
analytic counts; FLOPs come from :mod:`mot.model.accounting`. The memory estimate per GPU is a
floor, stated so a reader can redo it:

* **states** (FSDP shards them over the GPUs): fp32 weights, fp32 gradients and AdamW's two fp32
  moments, 16 bytes per parameter, divided by the number of GPUs;
* **activations** of one micro-batch kept for the backward pass, bf16, with a fused attention
  kernel (no ``S x S`` scores stored): ``34 x d_model`` bytes per token per layer (Korthikanti
  et al., 2022, without the attention-score term), or 2 layers' worth with activation
  checkpointing (a block's input per layer plus one block being recomputed), plus the fp32
  logits and their gradient, ``8 x vocab`` bytes per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from ..model.accounting import count_parameters, flops_per_token, verify_parameter_counts
from ..model.transformer import build_model
from ..runs.recipe import TrainConfig

STATE_BYTES_PER_PARAMETER = 16
ACTIVATION_BYTES_PER_TOKEN_LAYER_PER_WIDTH = 34
LOGIT_BYTES_PER_TOKEN_PER_ENTRY = 8


@dataclass(frozen=True)
class DryRunReport:
    """What a recipe asks for, per optimizer step and in all."""

    parameters_total: int
    parameters_active: int
    gpus: int
    tokens_per_step: int
    flops_per_token: float
    flops_per_step: float
    total_flops: float
    total_tokens: int
    state_bytes_per_gpu: float
    activation_bytes_per_gpu: float

    @property
    def memory_bytes_per_gpu(self) -> float:
        return self.state_bytes_per_gpu + self.activation_bytes_per_gpu

    def lines(self) -> Dict[str, str]:
        gib = 2 ** 30
        return {"parameters (total / active)": f"{self.parameters_total:,} / {self.parameters_active:,}",
                "GPUs": f"{self.gpus}",
                "tokens per step": f"{self.tokens_per_step:,}",
                "training FLOPs per token": f"{self.flops_per_token:,.0f}",
                "FLOPs per step": f"{self.flops_per_step:.3e}",
                "tokens / FLOPs in all": f"{self.total_tokens:,} / {self.total_flops:.3e}",
                "memory per GPU (floor)": f"{self.memory_bytes_per_gpu / gib:.1f} GiB (states "
                                          f"{self.state_bytes_per_gpu / gib:.1f}, activations "
                                          f"{self.activation_bytes_per_gpu / gib:.1f})"}


def dry_run(config: TrainConfig) -> DryRunReport:
    """Validate ``config`` (already loaded, so its fields are checked) on the meta device."""
    model = build_model(config.model, "meta")
    verify_parameter_counts(config.model, model)
    counts = count_parameters(config.model)
    gpus = max(1, config.gpus)
    data, model_config = config.data, config.model
    micro_tokens = data.seq_len * data.batch_rows
    tokens_per_step = micro_tokens * data.grad_accum * gpus
    per_token = flops_per_token(model_config, data.seq_len).training
    layers_kept = 2 if config.activation_checkpointing else model_config.n_layers
    activations = micro_tokens * (ACTIVATION_BYTES_PER_TOKEN_LAYER_PER_WIDTH * model_config.d_model * layers_kept
                                  + LOGIT_BYTES_PER_TOKEN_PER_ENTRY * model_config.vocab_size)
    return DryRunReport(counts.total, counts.active, gpus, tokens_per_step, per_token, per_token * tokens_per_step,
                        per_token * tokens_per_step * config.steps, tokens_per_step * config.steps,
                        STATE_BYTES_PER_PARAMETER * counts.total / gpus, float(activations))
