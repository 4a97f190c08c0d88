"""What a decoder is asked for and what it gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch

from .logits import Sampling


@dataclass(frozen=True)
class Request:
    """One generation: ``prompt`` (unified ids, ``<bos>`` first), where it starts and ends (``mode``:
    text, image, speech or free, see :mod:`.modality_state`), at most ``max_new_tokens`` new ids,
    its sampling, for an image its classifier-free ``guidance`` scale (1: none), and the latents of
    a Transfusion prompt's images."""

    prompt: Sequence[int]
    mode: str = "free"
    max_new_tokens: int = 256
    sampling: Sampling = field(default_factory=Sampling)
    guidance: float = 1.0
    #: Transfusion: the clean VAE latents ``[k, C, h, w]`` of the prompt's ``k`` images, in order; each
    #: image is ``<boi>``, one placeholder id per latent patch, ``<eoi>`` in the prompt
    latents: Optional[torch.Tensor] = None


@dataclass
class Generation:
    """What a request produced: the new ids (its final ``<eos>`` left out) and whether it ended by
    its grammar (``False``: it ran out of ``max_new_tokens`` or of context)."""

    tokens: List[int]
    finished: bool
