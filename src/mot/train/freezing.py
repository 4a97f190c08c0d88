"""Frozen towers (LMFusion: a pretrained text tower kept as it is while an image tower learns).

Freezing tower ``t`` keeps every weight its tokens' outputs depend on exactly as it was:

* every parameter under ``.towers.t.`` (attention, FFN, norms, and the head when it is untied) stops
  requiring a gradient, so no optimizer ever holds it;
* the rows of the embedding, and of a shared head, that belong to ``t``'s modalities (by the
  vocabulary's rule: ``<boi>`` is image's, ``<eos>`` and end markers the first modality's) get
  their gradient zeroed after every backward pass. AdamW then never moves them: their first and
  second moments stay zero, so the update ``m / (sqrt(v) + eps)`` is exactly zero; weight decay
  would still shrink them, which is why :func:`mot.runs.resolve.check_tower_settings` refuses
  ``decay_embeddings``.

Components shared by every tower cannot be frozen for one tower alone, so a model that ties one of
them is refused. With a shared head the frozen tower's text keeps its logits over its own tokens,
but the rows of the other modalities still learn and so move the softmax's normaliser a little:
untie the head (``model.untied: [ffn, attention, norms, head]``) for a frozen tower whose loss
stays exactly as it was.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..tokenizers.vocab import VocabLayout
from .optim import EMBEDDING_PARAMETERS, tower_of_parameter


def frozen_rows(towers: Sequence[str], model: ModelConfig, layout: VocabLayout) -> torch.Tensor:
    """``[vocab_size]`` bool: the token ids whose modality's tower is in ``towers``."""
    tower_of = model.tower_of_modality
    frozen_modalities = [i for i, m in enumerate(layout.modalities) if tower_of[m] in towers]
    return torch.from_numpy(np.isin(layout.modality_table(), frozen_modalities))


class FrozenTowers:
    """Freezes ``towers`` of ``model`` (before its optimizer is built) and zeroes the gradient of their
    rows of the embedding and a shared head (:meth:`zero_frozen_rows`, after each backward pass)."""

    def __init__(self, model: nn.Module, towers: Sequence[str], layout: VocabLayout):
        self.model, self.towers = model, list(towers)
        self._masks: Dict[str, torch.Tensor] = {}  # per row parameter, laid out like its gradient
        self._row_names: List[str] = []
        if not self.towers:
            return
        for name, parameter in model.named_parameters():
            if tower_of_parameter(name) in self.towers:
                parameter.requires_grad_(False)
            elif name in EMBEDDING_PARAMETERS:  # one row per token id: the embedding, a shared head
                self._row_names.append(name)
        self._keep = (~frozen_rows(self.towers, model.config, layout)).unsqueeze(1)  # [V, 1]: gradient stays

    def zero_frozen_rows(self) -> None:
        """Zero the gradient rows of the frozen towers' tokens (a multiply: no host sync). The
        parameters are looked up by name each time: FSDP2 replaces them with sharded ones after
        this class has seen them."""
        for name in self._row_names:
            grad = self.model.get_parameter(name).grad
            if grad is not None:
                if name not in self._masks:
                    self._masks[name] = _like(self._keep, grad)
                grad.mul_(self._masks[name])


def _like(mask: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``mask`` on ``grad``'s device and dtype, laid out like it (under FSDP2 a DTensor sharded as the
    gradient is; every rank holds the whole mask, so each takes its own rows without communicating)."""
    mask = mask.to(device=grad.device, dtype=grad.dtype).expand(tuple(grad.shape)).contiguous()
    if torch.distributed.is_available():
        from torch.distributed.tensor import DTensor, distribute_tensor

        if isinstance(grad, DTensor):
            return distribute_tensor(mask, grad.device_mesh, grad.placements, src_data_rank=None)
    return mask
