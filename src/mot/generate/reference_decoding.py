"""The readable reference for :mod:`.decoding`: one request at a time, and at every step the whole
sequence (prompt and everything generated so far) run through the model again, no cache, no padding.

It applies the same grammar, guidance and sampling as :class:`~.decoding.Decoder`, so the two must
produce the same tokens (``tests/generate/test_decoding.py``); ``benchmarks/decoding.py`` times it
against the cached decoder.
"""

from __future__ import annotations

from typing import List, Sequence

import torch

from ..model.transformer import MoTModel
from ..tokenizers.vocab import VocabLayout
from .decoding import Generation, Request
from .logits import TokenChooser, guided, processors_for
from .modality_state import ModalityGrammar, RowState, SpanRules


@torch.no_grad()
def reference_generate(model: MoTModel, layout: VocabLayout, requests: Sequence[Request],
                       rules: SpanRules = SpanRules()) -> List[Generation]:
    """Each request generated alone by recomputing its whole sequence at every step."""
    grammar = ModalityGrammar(layout, rules)
    device = next(model.parameters()).device
    allowed, eos = grammar.allowed_table(device), layout.special("<eos>")
    table = torch.from_numpy(layout.modality_table()).to(device)
    generations = []
    with model.causal_routing():
        for request in requests:
            state = RowState(grammar, request.mode, request.prompt)
            sequence = list(request.prompt)
            unconditional = [layout.special("<bos>"), *grammar.open_span_ids(request.prompt)]
            choose, process = TokenChooser([request.sampling], device), processors_for([request.sampling], device)
            generated: List[int] = []
            for _ in range(request.max_new_tokens):
                if state.done or len(sequence) >= model.config.max_seq_len:
                    break
                logits = _last_logits(model, sequence, table)
                if request.guidance != 1.0:
                    logits = guided(logits, _last_logits(model, unconditional, table), request.guidance)
                seen = torch.zeros_like(logits, dtype=torch.bool)
                seen[0, sequence] = True
                logits = process(logits.masked_fill(~allowed[state.state], float("-inf")), seen)
                token = int(choose(logits)[0])
                state.advance(token)
                sequence.append(token)
                unconditional.append(token)
                if token != eos:
                    generated.append(token)
            generations.append(Generation(generated, state.done))
    return generations


def _last_logits(model: MoTModel, sequence: List[int], table: torch.Tensor) -> torch.Tensor:
    """``[1, V]`` fp32 logits of the last position of ``sequence`` (one document, causal)."""
    tokens = torch.tensor([sequence], device=table.device)
    return model(tokens, table[tokens]).logits[:, -1].float()
