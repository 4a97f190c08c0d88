"""A trained run of the Chameleon or Chameleon+Speech setting as pipelines around the decoder:
text -> image (VQ codes decoded to pixels), image -> text (captions), text -> speech units (and
audio, by the corpus's unit vocoder), speech units or audio -> text, and free continuation of an
interleaved document.

Every call is one batch of requests, the same as making them one by one (request ``i`` samples
with seed ``sampling.seed + i``, so the images of one call differ and any one of them can be made
again alone).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..model.transformer import MoTModel
from ..tokenizers.image_common import tensor_to_uint8
from ..tokenizers.image_vq import ImageVQ
from ..tokenizers.speech_units import SAMPLE_RATE, SpeechUnitTokenizer
from ..tokenizers.speech_vocoder import KIND as VOCODER, UnitVocoder
from ..tokenizers.text import BPETokenizer
from ..tokenizers.vocab import VocabLayout
from .decoding import Decoder, Generation, Request
from .logits import GenerationError, Sampling
from .modality_state import SpanRules
from .run_assets import load_generation_run, tokenizer_directory

#: what a continued document is made of: ("text", str), ("image", uint8 [S, S, 3]) or ("speech", unit ids)
Segment = Tuple[str, object]


class ChameleonPipeline:
    """``text_to_image``, ``image_to_text``, ``text_to_speech``, ``speech_to_text``, ``continue_document``."""

    def __init__(self, model: MoTModel, layout: VocabLayout, text: BPETokenizer, vq: ImageVQ,
                 speech_max_units: int = 500, corpus_dir: Optional[Path] = None,
                 speech_units: Optional[SpeechUnitTokenizer] = None, vocoder: Optional[UnitVocoder] = None):
        self.model, self.layout, self.text, self.vq = model, layout, text, vq
        self.corpus_dir = corpus_dir
        # audio in (speech -> text from a recording) and out (speech you can hear), when the corpus has them
        self.speech_units, self.vocoder = speech_units, vocoder
        self.decoder = Decoder(model, layout, SpanRules(vq.config.tokens_per_image, speech_max_units))
        self.bos = layout.special("<bos>")
        self.boi, self.eoi = layout.markers("image")
        self.has_speech = "speech" in layout.modalities

    @classmethod
    def from_run(cls, run_dir: str | Path, log: Callable[[str], None] = print,
                 step: Optional[int] = None) -> "ChameleonPipeline":
        """The checkpoint of ``step`` (default: the newest complete one) of a Chameleon(+Speech) run
        with its corpus's tokenizers."""
        config, model, corpus = load_generation_run(run_dir, ("chameleon", "chameleon_speech"),
                                                    "autoregressive generation", log, step)
        text = BPETokenizer.load(tokenizer_directory(corpus, "text", "text"))
        vq = ImageVQ.load(tokenizer_directory(corpus, "image_vq", "an image")).eval()
        layout = corpus.layout(config.data.setting)
        speech_units = vocoder = None
        if "speech" in layout.modalities:
            speech_units = SpeechUnitTokenizer.load(tokenizer_directory(corpus, "speech_units", "speech"))
            if (corpus.directory / "tokenizers" / VOCODER).is_dir():
                vocoder = UnitVocoder.load(corpus.directory / "tokenizers" / VOCODER)
        return cls(model, layout, text, vq, corpus_dir=corpus.directory, speech_units=speech_units, vocoder=vocoder)

    # ---- images ------------------------------------------------------------------------------

    def text_to_image(self, prompts: Sequence[str], sampling: Sampling = Sampling(temperature=1.0),
                      guidance: float = 1.0, log: Optional[Callable[[str], None]] = None) -> np.ndarray:
        """Images ``uint8 [N, S, S, 3]`` for ``prompts``: ``<bos> caption <boi>``, then exactly one
        image's codes (guidance > 1: classifier-free, against ``<bos> <boi>``)."""
        codes = self.vq.config.tokens_per_image
        requests = [Request([self.bos, *self._text_ids(p, f"prompts[{i}]"), self.boi], mode="image",
                            max_new_tokens=codes + 1, sampling=_seeded(sampling, i), guidance=guidance)
                    for i, p in enumerate(prompts)]
        generations = self._generate(requests, log)
        return self.decode_images([g.tokens[:codes] for g in generations])

    def image_to_text(self, images: np.ndarray, max_new_tokens: int = 40,
                      sampling: Sampling = Sampling()) -> List[str]:
        """A caption for each image ``uint8 [N, S, S, 3]`` (greedy by default)."""
        codes = self.layout.to_global("image", self.vq.encode(images).cpu().numpy())
        requests = [Request([self.bos, self.boi, *row.tolist(), self.eoi], mode="text", max_new_tokens=max_new_tokens,
                            sampling=_seeded(sampling, i)) for i, row in enumerate(codes)]
        return [self.decode_text(g.tokens) for g in self._generate(requests)]

    def decode_images(self, code_rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Unified image ids, one image's count per row -> ``uint8 [N, S, S, 3]``."""
        local = torch.from_numpy(np.stack([self.layout.to_local("image", np.array(row)) for row in code_rows]))
        return tensor_to_uint8(self.vq.decode(local)).cpu().numpy()

    # ---- speech ------------------------------------------------------------------------------

    def text_to_speech(self, prompts: Sequence[str], sampling: Sampling = Sampling(temperature=1.0),
                       max_units: int = 500) -> List[np.ndarray]:
        """Speech unit ids (the unit tokenizer's, ``[0, units)``) for each text: ``<bos> text
        <bos_speech>``, then units until ``<eos_speech>`` (at most ``max_units``)."""
        begin = self._speech_markers()[0]
        requests = [Request([self.bos, *self._text_ids(p, f"prompts[{i}]"), begin], mode="speech",
                            max_new_tokens=max_units + 1, sampling=_seeded(sampling, i)) for i, p in enumerate(prompts)]
        return [self._units(g.tokens) for g in self._generate(requests)]

    def speech_to_text(self, units: Sequence[Sequence[int]], max_new_tokens: int = 60,
                       sampling: Sampling = Sampling()) -> List[str]:
        """A transcript for each utterance's unit ids ``[0, units)`` (greedy by default)."""
        begin, end = self._speech_markers()
        requests = [Request([self.bos, begin, *self.layout.to_global("speech", np.array(u)).tolist(), end],
                            mode="text", max_new_tokens=max_new_tokens, sampling=_seeded(sampling, i))
                    for i, u in enumerate(units)]
        return [self.decode_text(g.tokens) for g in self._generate(requests)]

    # ---- interleaved ---------------------------------------------------------------------------

    def speech_audio(self, units: Sequence[int] | np.ndarray, seed: int = 0) -> np.ndarray:
        """Mono 16 kHz float32 audio of unit ids ``[0, units)``, by the corpus's vocoder."""
        if self.vocoder is None:
            raise GenerationError(f"{self.corpus_dir or 'the corpus'} has no speech vocoder "
                                  f"(tokenizers/{VOCODER}); run `mot prepare` with its config again to train one "
                                  "(everything else is reused)")
        return self.vocoder.audio(units, seed=seed)

    def audio_to_units(self, audio: np.ndarray) -> np.ndarray:
        """Unit ids of mono 16 kHz float audio, by the corpus's unit tokenizer."""
        self._speech_markers()
        if self.speech_units is None:
            raise GenerationError("this pipeline was built without the corpus's speech unit tokenizer")
        return self.speech_units.encode(audio, SAMPLE_RATE)

    def continue_document(self, prompts: Sequence[str | Sequence[Segment]], max_new_tokens: int = 200,
                          sampling: Sampling = Sampling(temperature=1.0)) -> List[List[Segment]]:
        """Each prompt document continued freely: the model decides when to open an image (or a
        speech span). A prompt is a text, or segments ``("text", str)``, ``("image", uint8 [S, S, 3])``
        and ``("speech", unit ids)`` in document order."""
        requests = [Request(self.document_ids(p, f"prompts[{i}]"), mode="free", max_new_tokens=max_new_tokens,
                            sampling=_seeded(sampling, i)) for i, p in enumerate(prompts)]
        return [self.segments(g.tokens) for g in self._generate(requests)]

    def document_ids(self, document: str | Sequence[Segment], name: str = "document") -> List[int]:
        """``<bos>`` and a document's segments as unified ids (an image: ``<boi>``, its codes, ``<eoi>``)."""
        segments = [("text", document)] if isinstance(document, str) else list(document)
        if not segments:
            raise GenerationError(f"{name} is empty: give some text, an image or speech")
        ids = [self.bos]
        for index, segment in enumerate(segments):
            where = f"{name}[{index}]"
            kind, value = segment if isinstance(segment, tuple) and len(segment) == 2 else (None, None)
            if kind == "text":
                ids += self._text_ids(value, where)
            elif kind == "image":
                codes = self.vq.encode(np.asarray(value, dtype=np.uint8)[None]).cpu().numpy()[0]
                ids += [self.boi, *self.layout.to_global("image", codes).tolist(), self.eoi]
            elif kind == "speech":
                begin, end = self._speech_markers()
                ids += [begin, *self.layout.to_global("speech", np.asarray(value, dtype=np.int64)).tolist(), end]
            else:
                raise GenerationError(f"{where}={segment!r:.60}: a segment is (\"text\", str), (\"image\", "
                                      f"uint8 [S, S, 3]) or (\"speech\", unit ids)")
        return ids

    def segments(self, tokens: Sequence[int]) -> List[Segment]:
        """Generated ids as segments; an image or speech span cut short by ``max_new_tokens`` is left out."""
        segments, text, span, opened = [], [], [], None
        begins = {self.boi: "image", **({self._speech_markers()[0]: "speech"} if self.has_speech else {})}
        ends = {self.eoi, *([self._speech_markers()[1]] if self.has_speech else [])}
        for token in tokens:
            if token in begins:
                if text:
                    segments.append(("text", self.decode_text(text)))
                text, span, opened = [], [], begins[token]
            elif token in ends:
                segments.append(("image", self.decode_images([span])[0]) if opened == "image"
                                else ("speech", self._units(span)))
                opened = None
            elif opened is not None:
                span.append(token)
            else:
                text.append(token)
        if text:
            segments.append(("text", self.decode_text(text)))
        return segments

    # ---- ids ---------------------------------------------------------------------------------

    def decode_text(self, ids: Sequence[int]) -> str:
        start, stop = self.layout.id_range(self.layout.modalities[0])
        return self.text.decode(self.layout.to_local("text", np.array([i for i in ids if start <= i < stop],
                                                                        dtype=np.int64)).tolist())

    def _text_ids(self, prompt: str, name: str) -> List[int]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise GenerationError(f"{name}={prompt!r}: a prompt must hold some text")
        return self.layout.to_global("text", np.array(self.text.encode(prompt), dtype=np.int64)).tolist()

    def _speech_markers(self) -> Tuple[int, int]:
        if not self.has_speech:
            raise GenerationError("this run has no speech: it was trained in the chameleon setting, "
                                  "speech needs chameleon_speech")
        return self.layout.markers("speech")

    def _units(self, tokens: Sequence[int]) -> np.ndarray:
        start, stop = self.layout.id_range("speech")
        return np.array([t - start for t in tokens if start <= t < stop], dtype=np.int64)

    def _generate(self, requests: List[Request], log=None) -> List[Generation]:
        return self.decoder.generate(requests, log=log)


def _seeded(sampling: Sampling, index: int) -> Sampling:
    """Request ``index``'s sampling: its own seed, so a call's requests differ and each can be made alone."""
    return replace(sampling, seed=sampling.seed + index)
