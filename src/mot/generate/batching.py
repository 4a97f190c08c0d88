"""Decoding a batch whose requests come and go: the continuous batching a server needs (the paper's
section 6.3; Orca's iteration-level scheduling).

A :class:`DecodingBatch` holds the requests being decoded, their rows of one KV cache (right-aligned,
see :mod:`mot.model.kv_cache`) and the logits of each one's next token. Between two steps requests
:meth:`~DecodingBatch.join` (their prompts are prefilled in one forward, their cache rows joined to
the batch's) and :meth:`~DecodingBatch.leave`; a request that ends leaves by itself. One step::

    logits of every request's next token -> classifier-free guidance (image requests with guidance
                                            > 1 have an unconditional row, ``<bos> <boi>``)
                                         -> the grammar's allowed ids -> each request's sampling
                                         -> the next token of every request  (the step's one read
                                            to the host)
    host: the grammars move on; requests that ended leave the batch
    one forward of the others' new tokens over the cache

Each forward runs every tower once, on all of that tower's tokens from every request (the routing
plan, built on the host from the ids, sorts the batch's tokens by tower): a batch mixing text, image
and speech requests costs one pass of each tower per step, however the requests are mixed.

A request's tokens never depend on the rest of its batch: every row has its own positions, mask,
grammar state and random generator, so joining a batch late, or sharing it, changes nothing
(tests hold batched == one by one). :meth:`.Decoder.generate` is this batch with every request
joining at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch

from ..model.kv_cache import KVCache
from ..model.routing import build_routing_plan
from ..model.transformer import MoTModel
from ..tokenizers.vocab import VocabLayout
from .logits import TokenChooser, guided, processors_for
from .modality_state import ModalityGrammar, RowState, states_of
from .requests import Request

PAD_DOCUMENT, PROMPT_DOCUMENT = 0, 1


class DecodingSetup(Protocol):
    """What a batch needs of its :class:`.decoding.Decoder`: the model and its vocabulary's tables,
    and the decoder's checks of a request."""

    model: MoTModel
    layout: VocabLayout
    grammar: ModalityGrammar
    device: torch.device
    allowed: torch.Tensor  # [grammar states, V] bool: the ids each state allows
    modality_table: np.ndarray  # id -> modality index
    pad: int
    boi: int  # the image begin marker, -1 without images

    def check_request(self, name: str, request: Request) -> None: ...

    def unconditional_prompt(self, request: Request) -> List[int]: ...


def fetch(tensor: torch.Tensor) -> List[int]:
    """The one device -> host read of a decoding step (the sampled ids); tests count its calls."""
    return tensor.tolist()


@dataclass(eq=False)
class LiveRequest:
    """A request in a :class:`DecodingBatch`: its grammar state, its random generator and what it
    has produced so far."""

    request: Request
    state: RowState
    generator: Optional[torch.Generator]
    length: int  # positions of its row in the cache
    unconditional_length: Optional[int]  # its classifier-free row's, when it is guided
    tokens: List[int] = field(default_factory=list)  # new ids, ``<eos>`` left out
    steps: int = 0
    ended: bool = False  # by its grammar or a limit: it has left the batch

    @property
    def guided(self) -> bool:
        return self.unconditional_length is not None

    @property
    def finished(self) -> bool:
        """Whether it ended by its grammar (not by running out of ``max_new_tokens`` or context)."""
        return self.state.done


class DecodingBatch:
    """The requests ``decoder`` is decoding together (see the module docstring)."""

    def __init__(self, decoder: DecodingSetup):
        self.decoder = decoder
        self.model = decoder.model
        self.live: List[LiveRequest] = []
        self.cache: Optional[KVCache] = None
        #: ``[rows, V]``: the next-token logits of every request's row in :attr:`live` order, then of
        #: the unconditional rows of the guided ones, in the same order
        self.logits: Optional[torch.Tensor] = None
        self.seen: Optional[torch.Tensor] = None  # [requests, V]: ids each request's row holds
        self._settings: Optional[tuple] = None  # the live requests' sampling, rebuilt when they change

    def __len__(self) -> int:
        return len(self.live)

    # ---- requests join and leave ---------------------------------------------------------------

    @torch.no_grad()
    def join(self, requests: Sequence[Request]) -> List[LiveRequest]:
        """Prefill ``requests`` (checked first: a bad one raises and nothing joins) and add them to
        the batch; their first token is chosen by the next :meth:`step`."""
        decoder = self.decoder
        for index, request in enumerate(requests):
            decoder.check_request(f"requests[{index}]", request)
        unconditional = [decoder.unconditional_prompt(r) if r.guidance != 1.0 else None for r in requests]
        joining = [LiveRequest(request, RowState(decoder.grammar, request.mode, request.prompt),
                               TokenChooser.generator_for(request.sampling, decoder.device), len(request.prompt),
                               None if row is None else len(row))
                   for request, row in zip(requests, unconditional)]
        rows = [list(r.prompt) for r in requests] + [row for row in unconditional if row is not None]
        latents = [r.latents for r in requests] + [None] * (len(rows) - len(requests))
        cache = KVCache(self.model.config.n_layers)
        logits = self._prefill(rows, latents, cache)
        seen = self._seen(rows[:len(requests)])
        if not self.live:
            self.cache, self.logits, self.seen = cache, logits, seen
        else:
            old_requests, old_rows = len(self.live), len(self.logits)
            new_requests, new_rows = len(requests), len(rows)
            order = torch.cat([torch.arange(old_requests), torch.arange(old_rows, old_rows + new_requests),
                               torch.arange(old_requests, old_rows),
                               torch.arange(old_rows + new_requests, old_rows + new_rows)]).to(decoder.device)
            joined = KVCache.concatenate([self.cache, cache], PAD_DOCUMENT)
            self.cache = joined.select(order, joined.length)
            self.logits = torch.cat([self.logits, logits]).index_select(0, order)
            self.seen = torch.cat([self.seen, seen])
        self.live += joining
        self._settings = None
        return joining

    def leave(self, leaving: Sequence[LiveRequest]) -> None:
        """Take ``leaving`` out of the batch (a client went away); their cache rows are freed."""
        for live in leaving:
            live.ended = True
        self._keep([live for live in self.live if not live.ended])

    def _keep(self, kept: List[LiveRequest]) -> None:
        """Keep only the rows of ``kept`` (requests of :attr:`live`, in its order)."""
        if len(kept) == len(self.live):
            return
        if not kept:
            self.live, self.cache, self.logits, self.seen, self._settings = [], None, None, None, None
            return
        index = {id(live): i for i, live in enumerate(self.live)}
        guided = [live for live in self.live if live.guided]  # their unconditional rows follow, in this order
        guided_rank = {id(live): len(self.live) + rank for rank, live in enumerate(guided)}
        rows = [index[id(live)] for live in kept] + [guided_rank[id(live)] for live in kept if live.guided]
        device = self.decoder.device
        order = torch.tensor(rows, device=device)
        length = max(max(live.length, live.unconditional_length or 0) for live in kept)
        self.cache = self.cache.select(order, length)
        self.logits = self.logits.index_select(0, order)
        self.seen = self.seen.index_select(0, torch.tensor([index[id(live)] for live in kept], device=device))
        self.live, self._settings = kept, None

    # ---- one step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> List[Tuple[LiveRequest, int]]:
        """Choose every request's next token and feed it to the model: ``(request, token)`` for each
        request that was in the batch (an ending ``<eos>`` included). Requests that ended (by their
        grammar, ``max_new_tokens`` or the model's context) have left the batch afterwards."""
        if not self.live:
            return []
        ids = fetch(self._choose())
        limit = self.model.config.max_seq_len
        for live, token in zip(self.live, ids):
            live.state.advance(token)
            live.steps += 1
            if token != self.decoder.grammar.eos:
                live.tokens.append(token)
            live.ended = (live.state.done or live.steps >= live.request.max_new_tokens
                          or live.length + 1 >= limit)  # the token takes position `length`
        chosen = list(zip(self.live, ids))
        self._keep([live for live in self.live if not live.ended])
        if self.live:
            self._feed({id(live): token for live, token in chosen})
        return chosen

    def _choose(self) -> torch.Tensor:
        """The next id of every request ``[N]``, on the device."""
        processors, choose, scales, pairs = self._sampling()
        count, device = len(self.live), self.decoder.device
        conditional = self.logits[:count].float()
        if pairs is not None:  # guided requests: their unconditional rows follow the requests' rows
            mixed = guided(conditional.index_select(0, pairs), self.logits[count:].float(), scales)
            conditional = conditional.index_copy(0, pairs, mixed)
        states = torch.tensor(states_of([live.state for live in self.live]), device=device)
        allowed = self.decoder.allowed.index_select(0, states)
        return choose(processors(conditional.masked_fill(~allowed, float("-inf")), self.seen))

    def _sampling(self) -> tuple:
        """The live requests' logits processors, token chooser, guidance scales and guided rows."""
        if self._settings is None:
            device = self.decoder.device
            samplings = [live.request.sampling for live in self.live]
            guided_rows = [i for i, live in enumerate(self.live) if live.guided]
            scales = torch.tensor([float(self.live[i].request.guidance) for i in guided_rows],
                                  dtype=torch.float64, device=device)
            self._settings = (processors_for(samplings, device),
                              TokenChooser(samplings, device, [live.generator for live in self.live]),
                              scales, torch.tensor(guided_rows, device=device) if guided_rows else None)
        return self._settings

    def _feed(self, tokens: dict) -> None:
        """One forward of each live request's new token (``tokens`` by ``id(request)``)."""
        rows = self.live + [live for live in self.live if live.guided]
        ids = [tokens[id(live)] for live in rows]
        positions = ([live.length for live in self.live]
                     + [live.unconditional_length for live in self.live if live.guided])
        tokens_np = np.array(ids, dtype=np.int64)[:, None]
        self.logits = self._forward(tokens_np, np.array(positions, dtype=np.int64)[:, None],
                                    np.full_like(tokens_np, PROMPT_DOCUMENT), self.cache)
        for live in self.live:
            live.length += 1
            if live.guided:
                live.unconditional_length += 1
        count = len(self.live)
        device = self.decoder.device
        self.seen[torch.arange(count, device=device), torch.tensor(ids[:count], device=device)] = True

    # ---- model calls ---------------------------------------------------------------------------

    def _prefill(self, rows: List[List[int]], latents: List[Optional[torch.Tensor]], cache: KVCache) -> torch.Tensor:
        """Run the left-padded prompts into ``cache``; the logits of each row's last position ``[R, V]``."""
        pad = self.decoder.pad
        width = max(len(row) for row in rows)
        tokens = np.full((len(rows), width), pad, dtype=np.int64)
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
        device = self.decoder.device
        rows, starts = np.nonzero(tokens[:, :-1] == self.decoder.boi)  # host ids: no device read
        found = [(row, start) for row, start in zip(rows, starts) if latents[row] is not None]
        if not found:
            return {}
        stacked = torch.cat([latents[row] for row in sorted({row for row, _ in found})]).to(device)
        span_ids = np.zeros_like(tokens)
        patches = self.decoder.grammar.rules.image_tokens
        for span, (row, start) in enumerate(found, start=1):
            span_ids[row, start + 1:start + 1 + patches] = span
        starts = torch.tensor([[row, start + 1] for row, start in found], device=device)
        return dict(latents=stacked, latent_starts=starts, span_ids=torch.from_numpy(span_ids).to(device),
                    timesteps=torch.zeros(len(found), dtype=torch.long, device=device))

    def _forward(self, tokens: np.ndarray, positions: np.ndarray, documents: np.ndarray, cache: KVCache,
                 images: Optional[dict] = None) -> torch.Tensor:
        """The model over host-made inputs: the modalities and the routing plan come from the ids on
        the host, so the model reads nothing back."""
        device = self.decoder.device
        modality_ids = torch.from_numpy(self.decoder.modality_table[tokens])
        plan = build_routing_plan(modality_ids, self.model.config.modality_tower_index).to(device)
        as_device = (lambda array: torch.from_numpy(array).to(device))
        images = dict(images or {})
        span_ids = images.pop("span_ids", None)
        with self.model.causal_routing():
            output = self.model(as_device(tokens), modality_ids.to(device), positions=as_device(positions),
                                document_ids=as_device(documents),
                                span_ids=span_ids if span_ids is not None else torch.zeros_like(as_device(documents)),
                                plan=plan, cache=cache, **images)
        return output.logits[:, -1]

    def _seen(self, rows: List[List[int]]) -> torch.Tensor:
        seen = torch.zeros(len(rows), self.decoder.layout.vocab_size, dtype=torch.bool)
        for index, row in enumerate(rows):
            seen[index, row] = True
        return seen.to(self.decoder.device)
