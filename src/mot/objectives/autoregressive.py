"""Next-token cross-entropy, with the loss of each modality counted separately.

The paper reports training and validation loss per modality (section 4), so the loss is returned
both as the mean that gets backpropagated and as per-modality sums and counts. Sums and counts
(not means) are what ranks and steps can add up; :func:`per_modality_mean` divides at logging time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class LossBreakdown:
    """The next-token loss of one batch."""

    #: [] fp32: mean cross-entropy over the trained positions; the value to backpropagate.
    total: torch.Tensor
    #: [M] fp32: summed cross-entropy of the positions of each modality (carries gradient:
    #: detach it before keeping it across steps).
    sum_per_modality: torch.Tensor
    #: [M] int64: the number of trained (not ignored) positions of each modality.
    count_per_modality: torch.Tensor


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, modality_ids: torch.Tensor,
                    num_modalities: int) -> LossBreakdown:
    """Cross-entropy of ``logits [B, L, V]`` against ``targets [B, L]`` (int64, ``-100`` = ignore).

    ``targets[b, l]`` is the token that ``logits[b, l]`` must predict (the loader has shifted them).
    A position's modality is ``modality_ids[b, l]``: the modality of the input token at ``l``, whose
    tower made the prediction. With the vocabulary's layout (``<boi>`` belongs to the image
    modality), the loss of the first image token, predicted at ``<boi>``, counts as image.

    The loss is computed in fp32 whatever the dtype of ``logits``. A batch with no trained
    position at all gives ``total == 0`` (not NaN, as ``F.cross_entropy`` would) so that its
    gradients are zeros and an all-reduce across ranks stays finite. A modality with no trained
    position gets sum 0 and count 0.

    Nothing here reads a device value on the host: the per-modality split is a comparison with
    ``arange(M)`` and a sum, so the function can sit inside a compiled or overlapped step.
    """
    if logits.shape[:-1] != targets.shape or targets.shape != modality_ids.shape:
        raise ValueError(f"logits {list(logits.shape)}, targets {list(targets.shape)} and modality_ids "
                         f"{list(modality_ids.shape)} must agree on [B, L]")
    vocab = logits.shape[-1]
    flat_targets = targets.reshape(-1)
    # [N] fp32, 0 at ignored positions.
    per_position = F.cross_entropy(logits.reshape(-1, vocab).float(), flat_targets,
                                   ignore_index=IGNORE_INDEX, reduction="none")
    trained = flat_targets != IGNORE_INDEX  # [N]
    modalities = torch.arange(num_modalities, device=modality_ids.device)
    in_modality = modality_ids.reshape(-1, 1) == modalities  # [N, M]; no one_hot: it checks bounds on the host
    # where, not a product with the mask: a NaN or inf of one modality must not reach the others' sums
    sums = torch.where(in_modality, per_position.unsqueeze(1), 0.0).sum(0)  # [M]
    counts = (in_modality & trained.unsqueeze(1)).sum(0)  # [M] int64
    total = per_position.sum() / trained.sum().clamp(min=1)
    return LossBreakdown(total, sums, counts)


def per_modality_mean(sums: torch.Tensor, counts: torch.Tensor) -> List[Optional[float]]:
    """Mean loss of each modality as Python floats for logging; ``None`` where the count is 0.

    This reads the values on the host (one sync): call it when logging, not every step.
    """
    return [s / c if c > 0 else None for s, c in zip(sums.detach().tolist(), counts.tolist())]
