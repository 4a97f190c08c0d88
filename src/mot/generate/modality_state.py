"""Which tokens may come next: the modality state machine that keeps a generated sequence well formed.

Each row of a generation is in one state at a time, and each state allows a set of ids:

* **text**: text ids and ``<eos>``; in ``free`` mode also the begin marker of every other modality,
  so the model itself decides when to open an image or a speech span, as Chameleon does;
* **image**: after ``<boi>``, exactly ``image_tokens`` ids of the image code range, then ``<eoi>``
  and nothing else;
* **speech**: after ``<bos_speech>``, unit ids, and ``<eos_speech>`` once the span holds a unit; at
  ``speech_max_units`` only ``<eos_speech>``;
* **done**: the row has ended (``<eos>``, or the end of the span its mode asked for); it is fed
  ``<pad>`` while the other rows of the batch go on.

A request's mode says where it starts and when it ends: ``text`` (text until ``<eos>``: captions,
speech -> text), ``image`` (the prompt ends inside an image span, usually with ``<boi>``: one image,
then stop after ``<eoi>``), ``speech`` (likewise for one speech span) and ``free`` (interleaved
continuation until ``<eos>``). Everything here runs on the host, on ids the decoder has already
read back: it costs no device synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from ..tokenizers.vocab import VocabLayout
from .logits import GenerationError

MODES = ("text", "image", "speech", "free")
#: the states; each is a row of the allowed-ids table
TEXT, FREE_TEXT, IMAGE_CODE, IMAGE_END, SPEECH_FIRST, SPEECH_UNIT, SPEECH_END, DONE = range(8)
IMAGE, SPEECH = "image", "speech"


@dataclass(frozen=True)
class SpanRules:
    """How long spans are: the image tokenizer's codes per image (``None``: the layout has no
    discrete images) and the most units a speech span may hold."""

    image_tokens: Optional[int] = None
    speech_max_units: int = 500


class ModalityGrammar:
    """The allowed ids of every state for one vocabulary layout: ``allowed_table()`` is a
    ``[states, vocab]`` boolean table, and :class:`RowState` moves between its rows."""

    def __init__(self, layout: VocabLayout, rules: SpanRules):
        self.layout, self.rules = layout, rules
        self.host = layout.modalities[0]
        self.pad, self.eos = layout.special("<pad>"), layout.special("<eos>")
        self.markers: Dict[str, tuple] = {m: layout.markers(m) for m in layout.modalities[1:]}
        self.begins = {begin: modality for modality, (begin, _) in self.markers.items()}
        if IMAGE in self.markers and rules.image_tokens is None:
            raise GenerationError("the layout has images: SpanRules.image_tokens must give the codes per image")

    def allowed_table(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[8, vocab]`` bool: row ``s`` allows the ids state ``s`` may produce."""
        table = torch.zeros(DONE + 1, self.layout.vocab_size, dtype=torch.bool)
        start, stop = self.layout.id_range(self.host)
        table[TEXT, start:stop] = table[FREE_TEXT, start:stop] = True
        table[TEXT, self.eos] = table[FREE_TEXT, self.eos] = True
        for begin in self.begins:
            table[FREE_TEXT, begin] = True
        if IMAGE in self.markers:
            table[IMAGE_CODE, slice(*self.layout.id_range(IMAGE))] = True
            table[IMAGE_END, self.markers[IMAGE][1]] = True
        if SPEECH in self.markers:
            units = slice(*self.layout.id_range(SPEECH))
            table[SPEECH_FIRST, units] = table[SPEECH_UNIT, units] = True
            table[SPEECH_UNIT, self.markers[SPEECH][1]] = table[SPEECH_END, self.markers[SPEECH][1]] = True
        table[DONE, self.pad] = True
        return table.to(device)

    def open_span(self, prompt: Sequence[int]) -> Optional[tuple]:
        """``(modality, tokens in it so far)`` when ``prompt`` ends inside a span, else ``None``."""
        for index in range(len(prompt) - 1, -1, -1):
            token = int(prompt[index])
            if token in self.begins:
                return self.begins[token], len(prompt) - 1 - index
            if any(token == end for _, end in self.markers.values()):
                return None
        return None

    def open_span_ids(self, prompt: Sequence[int]) -> List[int]:
        """The ids of ``prompt``'s open span, its begin marker first; empty when no span is open.
        (With ``<bos>`` before them, the unconditional prompt of classifier-free guidance.)"""
        opened = self.open_span(prompt)
        return [int(t) for t in prompt[len(prompt) - 1 - opened[1]:]] if opened is not None else []


class RowState:
    """One row's place in the grammar: :attr:`state`, updated by :meth:`advance` with each token."""

    def __init__(self, grammar: ModalityGrammar, mode: str, prompt: Sequence[int]):
        if mode not in MODES:
            raise GenerationError(f"mode={mode!r}: must be one of {list(MODES)}")
        self.grammar, self.mode = grammar, mode
        self.span: Optional[str] = None
        self.count = 0  # tokens in the open span
        opened = grammar.open_span(prompt)
        if mode in (IMAGE, SPEECH):
            if mode not in grammar.markers:
                raise GenerationError(f"mode={mode!r}: this model has no {mode} modality")
            if opened is None or opened[0] != mode:
                raise GenerationError(f"mode={mode!r}: the prompt must end inside a {mode} span (with its begin "
                                      f"marker, id {grammar.markers[mode][0]}, or some of its tokens after it)")
        if opened is not None:
            self.span, self.count = opened
            if self.span == IMAGE and self.count > grammar.rules.image_tokens:
                raise GenerationError(f"the prompt's open image span holds {self.count} codes, more than an "
                                      f"image's {grammar.rules.image_tokens}")
        self.state = self._state()

    @property
    def done(self) -> bool:
        return self.state == DONE

    def _state(self) -> int:
        if self.span == IMAGE:
            return IMAGE_CODE if self.count < self.grammar.rules.image_tokens else IMAGE_END
        if self.span == SPEECH:
            if self.count >= self.grammar.rules.speech_max_units:
                return SPEECH_END
            return SPEECH_FIRST if self.count == 0 else SPEECH_UNIT
        return FREE_TEXT if self.mode == "free" else TEXT

    def advance(self, token: int) -> None:
        """Take the row's next token (one the current state allows)."""
        if self.done:
            return
        grammar = self.grammar
        if token == grammar.eos and self.span is None:
            self.state = DONE
            return
        if token in grammar.begins:
            self.span, self.count = grammar.begins[token], 0
        elif self.span is not None and token == grammar.markers[self.span][1]:
            ended, self.span = self.span, None
            if self.mode == ended:  # the one span the request asked for is complete
                self.state = DONE
                return
        elif self.span is not None:
            self.count += 1
        self.state = self._state()


def states_of(rows: Sequence[RowState]) -> List[int]:
    """The current state of each row (the index into :meth:`ModalityGrammar.allowed_table`)."""
    return [row.state for row in rows]
