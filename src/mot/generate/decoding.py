"""Autoregressive decoding for every architecture: prefill once, then one position per step over the
KV cache, with every output kept well formed by the modality grammar.

:meth:`Decoder.generate` decodes a list of requests together: a :class:`.batching.DecodingBatch`
that they all join at once, stepped until each has ended (the module :mod:`.batching` shows one
step). A server keeps such a batch open and lets requests join and leave between steps.

The model routes MoE tokens by themselves while decoding (:meth:`MoTModel.causal_routing`): an
Expert-Choice MoE, whose experts pick tokens among the whole batch when training, decodes with its
router used as top-1 token choice (docs/generation.md says what that changes).

Rows are left-padded; padding is a document of its own, so no prompt attends to it, and each row's
positions start at 0 at its first prompt token. :mod:`.reference_decoding` is the readable
reference: the whole sequence recomputed at every step, one request at a time.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from ..model.transformer import MoTModel
from ..progress import progress
from ..tokenizers.vocab import VocabLayout
from .batching import DecodingBatch
from .logits import GenerationError
from .modality_state import IMAGE, ModalityGrammar, SpanRules
from .requests import Generation, Request  # noqa: F401 - where most callers import them from


class Decoder:
    """Generates from ``model`` in the vocabulary ``layout`` (the corpus's, for its setting)."""

    def __init__(self, model: MoTModel, layout: VocabLayout, rules: SpanRules = SpanRules()):
        if model.config.vocab_size != layout.vocab_size:
            raise GenerationError(f"the model has {model.config.vocab_size} ids, the vocabulary {layout.vocab_size}")
        self.model, self.layout = model, layout
        self.grammar = ModalityGrammar(layout, rules)
        self.device = next(model.parameters()).device
        self.allowed = self.grammar.allowed_table(self.device)
        self.bos, self.pad = layout.special("<bos>"), layout.special("<pad>")
        self.boi = layout.markers("image")[0] if "image" in layout.modalities[1:] else -1
        self.modality_table = layout.modality_table()

    # ---- the loop ----------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, requests: Sequence[Request], log: Optional[Callable[[str], None]] = None) -> List[Generation]:
        """Generate every request in one batch; the same as generating them one by one. With ``log``,
        progress lines (a bar on a terminal)."""
        if not requests:
            raise GenerationError("requests is empty: give at least one")
        batch = DecodingBatch(self)
        joined = batch.join(requests)
        steps = range(max(r.max_new_tokens for r in requests))
        if log is not None:
            steps = progress(steps, f"decoding {len(requests)} requests", unit="tokens", log=log)
        for _ in steps:
            if not batch:
                break
            batch.step()
        return [Generation(live.tokens, live.finished) for live in joined]

    # ---- requests ----------------------------------------------------------------------------

    def unconditional_prompt(self, request: Request) -> List[int]:
        """The prompt classifier-free guidance subtracts: ``<bos> <boi>`` and the codes the prompt's
        open image already holds (what image-first documents, images without a caption before
        them, taught the model)."""
        return [self.bos, *self.grammar.open_span_ids(request.prompt)]

    def check_request(self, name: str, request: Request) -> None:
        """Raise :class:`GenerationError` naming the first thing wrong with ``request``."""
        limit = self.model.config.max_seq_len
        prompt = list(request.prompt)
        if not prompt or prompt[0] != self.bos:
            raise GenerationError(f"{name}.prompt must start with <bos> (id {self.bos})")
        bad = [t for t in prompt if not isinstance(t, (int, np.integer)) or not 0 <= int(t) < self.layout.vocab_size]
        if bad:
            raise GenerationError(f"{name}.prompt holds {bad[0]!r}, not an id of the vocabulary "
                                  f"[0, {self.layout.vocab_size})")
        if len(prompt) >= limit:
            raise GenerationError(f"{name}.prompt has {len(prompt)} tokens; the model's context is "
                                  f"max_seq_len={limit}, which leaves no room to generate")
        if isinstance(request.max_new_tokens, bool) or not isinstance(request.max_new_tokens, int) \
                or request.max_new_tokens < 1:
            raise GenerationError(f"{name}.max_new_tokens={request.max_new_tokens!r}: must be an integer >= 1")
        guidance = request.guidance
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not np.isfinite(guidance) \
                or guidance < 0:
            raise GenerationError(f"{name}.guidance={guidance!r}: must be a finite number >= 0")
        opened = self.grammar.open_span(prompt) if request.mode == IMAGE else None
        if opened is not None and opened[0] == IMAGE:
            needed = self.grammar.rules.image_tokens - opened[1] + 1  # the missing codes and <eoi>
            if len(prompt) + needed > limit:
                raise GenerationError(f"{name}.prompt has {len(prompt)} tokens; with the {needed} an image "
                                      f"still needs, more than max_seq_len={limit}")
        if request.latents is not None:
            self._check_latents(name, prompt, request.latents)
        if guidance != 1.0 and request.mode != IMAGE:
            raise GenerationError(f"{name}.guidance={guidance}: classifier-free guidance is for image "
                                  f"requests (mode='image'), not mode={request.mode!r}")

    def _check_latents(self, name: str, prompt: List[int], latents: torch.Tensor) -> None:
        """A Transfusion prompt's images: one latent per ``<boi>``, each span the latent's patches."""
        images = [index for index, token in enumerate(prompt) if token == self.boi]
        if not isinstance(latents, torch.Tensor) or latents.dim() != 4 or len(latents) != len(images):
            shape = list(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise GenerationError(f"{name}.latents must be [images, C, h, w] with one image per <boi> of the "
                                  f"prompt ({len(images)}); got {shape}")
        patches, eoi = self.grammar.rules.image_tokens, self.layout.markers("image")[1]
        for start in images:
            if start + patches + 1 >= len(prompt) or prompt[start + patches + 1] != eoi:
                raise GenerationError(f"{name}.prompt: the image at position {start} must be <boi>, {patches} "
                                      f"placeholders (one per latent patch) and <eoi>")

