"""Autoregressive decoding for every architecture: prefill once, then one position per step over the
KV cache, with every output kept well formed by the modality grammar.

One step, for a batch of requests::

    logits of the last position  -> classifier-free guidance (image requests with guidance > 1 run an
                                    unconditional row, ``<bos> <boi>``, beside the conditional one)
                                 -> the grammar's allowed ids -> the request's sampling processors
                                 -> the next token of every request       (the step's one read to the host)
    host: the grammar moves on; the next position's modality, tower routing plan and position are
          known from the ids just read, so nothing else is read back from the device
    one forward of the new positions over the cache

The model routes MoE tokens by themselves while decoding (:meth:`MoTModel.causal_routing`): an
Expert-Choice MoE, whose experts pick tokens among the whole batch when training, decodes with its
router used as top-1 token choice (docs/generation.md says what that changes).

Rows are left-padded; padding is a document of its own, so no prompt attends to it, and each row's
positions start at 0 at its first prompt token. :mod:`.reference_decoding` is the readable
reference: the whole sequence recomputed at every step, one request at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from ..model.kv_cache import KVCache
from ..model.routing import build_routing_plan
from ..model.transformer import MoTModel
from ..progress import progress
from ..tokenizers.vocab import VocabLayout
from .logits import GenerationError, Sampling, TokenChooser, guided, processors_for
from .modality_state import IMAGE, ModalityGrammar, RowState, SpanRules, states_of

PAD_DOCUMENT, PROMPT_DOCUMENT = 0, 1


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


def fetch(tensor: torch.Tensor) -> List[int]:
    """The one device -> host read of a decoding step (the sampled ids); tests count its calls."""
    return tensor.tolist()


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
        self._check(requests)
        states = [RowState(self.grammar, r.mode, r.prompt) for r in requests]
        rows = [list(r.prompt) for r in requests] + [self._unconditional(r) for r in requests if r.guidance != 1.0]
        pairs = [i for i, r in enumerate(requests) if r.guidance != 1.0]  # row len(requests) + k pairs with pairs[k]
        outputs: List[List[int]] = [[] for _ in requests]
        choose = TokenChooser([r.sampling for r in requests], self.device)
        processors = processors_for([r.sampling for r in requests], self.device)
        scales = torch.tensor([float(r.guidance) for r in requests], dtype=torch.float64, device=self.device)
        cache = KVCache(self.model.config.n_layers)
        lengths = [len(row) for row in rows]
        latents = [r.latents for r in requests] + [None] * len(pairs)
        with self.model.causal_routing():
            logits = self._prefill(rows, latents, cache)
            seen = self._seen(rows)
            steps = range(max(r.max_new_tokens for r in requests))
            if log is not None:
                steps = progress(steps, f"decoding {len(requests)} requests", unit="tokens", log=log)
            for step in steps:
                active = [not s.done and step < r.max_new_tokens for s, r in zip(states, requests)]
                if not any(active) or cache.length >= self.model.config.max_seq_len:
                    break
                chosen = self._choose(logits, states, pairs, scales, seen[:len(requests)], processors, choose, active)
                ids = fetch(chosen)
                for index, token in enumerate(ids):
                    if active[index]:
                        states[index].advance(token)
                        if token != self.grammar.eos:
                            outputs[index].append(token)
                if all(s.done or step + 1 >= r.max_new_tokens for s, r in zip(states, requests)):
                    break  # nothing reads another step's logits
                step_ids = ids + [ids[i] for i in pairs]
                logits = self._step(step_ids, lengths, cache)
                lengths = [length + 1 for length in lengths]
                seen[torch.arange(len(step_ids), device=self.device), torch.tensor(step_ids, device=self.device)] = True
        return [Generation(out, state.done) for out, state in zip(outputs, states)]

    def _choose(self, logits, states, pairs, scales, seen, processors, choose, active) -> torch.Tensor:
        """The next id of every request ``[N]`` (``<pad>`` for those that have ended), on the device."""
        count = len(states)
        conditional = logits[:count].float()
        if pairs:  # guided requests: their unconditional rows follow the requests' rows
            index = torch.tensor(pairs, device=self.device)
            mixed = guided(conditional.index_select(0, index), logits[count:].float(), scales.index_select(0, index))
            conditional = conditional.index_copy(0, index, mixed)
        allowed = self.allowed.index_select(0, torch.tensor(states_of(states), device=self.device))
        conditional = processors(conditional.masked_fill(~allowed, float("-inf")), seen)
        chosen = choose(conditional)
        still = torch.tensor(active, device=self.device)
        return torch.where(still, chosen, torch.full_like(chosen, self.pad))

    # ---- model calls -------------------------------------------------------------------------

    def _prefill(self, rows: List[List[int]], latents: List[Optional[torch.Tensor]], cache: KVCache) -> torch.Tensor:
        """Run the left-padded prompts into ``cache``; the logits of each row's last position ``[R, V]``."""
        width = max(len(row) for row in rows)
        tokens = np.full((len(rows), width), self.pad, dtype=np.int64)
        documents = np.full_like(tokens, PAD_DOCUMENT)
        positions = np.zeros_like(tokens)
        for index, row in enumerate(rows):
            tokens[index, width - len(row):] = row
            documents[index, width - len(row):] = PROMPT_DOCUMENT
            positions[index, width - len(row):] = np.arange(len(row))
        return self._forward(tokens, positions, documents, cache, self._images(tokens, latents))

    def _images(self, tokens: np.ndarray, latents: List[Optional[torch.Tensor]]) -> dict:
        """The model's latent inputs for the prompts' Transfusion images: the latents, where each
        starts (row, position), clean timesteps, and the span ids that let an image's patches see
        each other (bidirectional within the image, as in training)."""
        rows, starts = np.nonzero(tokens[:, :-1] == self.boi)  # host ids: no device read
        found = [(row, start) for row, start in zip(rows, starts) if latents[row] is not None]
        if not found:
            return {}
        stacked = torch.cat([latents[row] for row in sorted({row for row, _ in found})]).to(self.device)
        span_ids = np.zeros_like(tokens)
        patches = self.grammar.rules.image_tokens
        for span, (row, start) in enumerate(found, start=1):
            span_ids[row, start + 1:start + 1 + patches] = span
        starts = torch.tensor([[row, start + 1] for row, start in found], device=self.device)
        return dict(latents=stacked, latent_starts=starts, span_ids=torch.from_numpy(span_ids).to(self.device),
                    timesteps=torch.zeros(len(found), dtype=torch.long, device=self.device))

    def _step(self, ids: List[int], lengths: List[int], cache: KVCache) -> torch.Tensor:
        """One new position per row (``ids``, at the rows' ``lengths``) over the cache."""
        tokens = np.array(ids, dtype=np.int64)[:, None]
        positions = np.array(lengths, dtype=np.int64)[:, None]
        return self._forward(tokens, positions, np.full_like(tokens, PROMPT_DOCUMENT), cache)

    def _forward(self, tokens: np.ndarray, positions: np.ndarray, documents: np.ndarray, cache: KVCache,
                 images: Optional[dict] = None) -> torch.Tensor:
        """The model over host-made inputs: the modalities and the routing plan come from the ids on
        the host, so the model reads nothing back."""
        modality_ids = torch.from_numpy(self.modality_table[tokens])
        plan = build_routing_plan(modality_ids, self.model.config.modality_tower_index).to(self.device)
        as_device = (lambda array: torch.from_numpy(array).to(self.device))
        images = dict(images or {})
        span_ids = images.pop("span_ids", None)
        output = self.model(as_device(tokens), modality_ids.to(self.device), positions=as_device(positions),
                            document_ids=as_device(documents),
                            span_ids=span_ids if span_ids is not None else torch.zeros_like(as_device(documents)),
                            plan=plan, cache=cache, **images)
        return output.logits[:, -1]

    # ---- requests ----------------------------------------------------------------------------

    def _seen(self, rows: List[List[int]]) -> torch.Tensor:
        seen = torch.zeros(len(rows), self.layout.vocab_size, dtype=torch.bool)
        for index, row in enumerate(rows):
            seen[index, row] = True
        return seen.to(self.device)

    def _unconditional(self, request: Request) -> List[int]:
        """The prompt classifier-free guidance subtracts: ``<bos> <boi>`` and the codes the prompt's
        open image already holds (what image-first documents, images without a caption before
        them, taught the model)."""
        return [self.bos, *self.grammar.open_span_ids(request.prompt)]

    def _check(self, requests: Sequence[Request]) -> None:
        if not requests:
            raise GenerationError("requests is empty: give at least one")
        for index, request in enumerate(requests):
            self._check_request(f"requests[{index}]", request)

    def _check_request(self, name: str, request: Request) -> None:
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

