"""A trained run of the Chameleon or Chameleon+Speech setting as pipelines around the decoder:
text -> image (VQ codes decoded to pixels), image -> text (captions), text -> speech units (and
audio, by the corpus's unit vocoder), speech units or audio -> text, and free continuation of an
interleaved document.

Every call is one batch of requests, the same as making them one by one (request ``i`` samples
with seed ``sampling.seed + i``, so the images of one call differ and any one of them can be made
again alone).
"""

from __future__ import annotations

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
        requests = [self.image_request(p, sampling.for_request(i), guidance, f"prompts[{i}]")
                    for i, p in enumerate(prompts)]
        return self.decode_images([self.image_codes(g) for g in self._generate(requests, log)])

    def image_request(self, prompt: str, sampling: Sampling, guidance: float = 1.0, name: str = "prompt") -> Request:
        """The decoding request of one text -> image prompt (a server decodes it beside others)."""
        return Request([self.bos, *self._text_ids(prompt, name), self.boi], mode="image",
                       max_new_tokens=self.vq.config.tokens_per_image + 1, sampling=sampling, guidance=guidance)

    def image_codes(self, generation: Generation) -> List[int]:
        """The image codes of a text -> image generation (its ``<eoi>`` left out)."""
        return generation.tokens[:self.vq.config.tokens_per_image]

    def image_to_text(self, images: np.ndarray, max_new_tokens: int = 40,
                      sampling: Sampling = Sampling()) -> List[str]:
        """A caption for each image ``uint8 [N, S, S, 3]`` (greedy by default)."""
        requests = self.caption_requests(images, max_new_tokens, sampling)
        return [self.decode_text(g.tokens) for g in self._generate(requests)]

    def caption_requests(self, images: np.ndarray, max_new_tokens: int, sampling: Sampling) -> List[Request]:
        """The decoding requests of image -> text for ``images`` (image ``i`` with seed + i)."""
        codes = self.layout.to_global("image", self.vq.encode(images).cpu().numpy())
        return [Request([self.bos, self.boi, *row.tolist(), self.eoi], mode="text", max_new_tokens=max_new_tokens,
                        sampling=sampling.for_request(i)) for i, row in enumerate(codes)]

    def decode_images(self, code_rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Unified image ids, one image's count per row -> ``uint8 [N, S, S, 3]``."""
        local = torch.from_numpy(np.stack([self.layout.to_local("image", np.array(row)) for row in code_rows]))
        return tensor_to_uint8(self.vq.decode(local)).cpu().numpy()

    # ---- speech ------------------------------------------------------------------------------

    def text_to_speech(self, prompts: Sequence[str], sampling: Sampling = Sampling(temperature=1.0),
                       max_units: int = 500) -> List[np.ndarray]:
        """Speech unit ids (the unit tokenizer's, ``[0, units)``) for each text: ``<bos> text
        <bos_speech>``, then units until ``<eos_speech>`` (at most ``max_units``)."""
        requests = [self.speech_request(p, sampling.for_request(i), max_units, f"prompts[{i}]")
                    for i, p in enumerate(prompts)]
        return [self.units_of(g.tokens, max_units) for g in self._generate(requests)]

    def speech_request(self, prompt: str, sampling: Sampling, max_units: int = 500, name: str = "prompt") -> Request:
        """The decoding request of one text -> speech prompt."""
        return Request([self.bos, *self._text_ids(prompt, name), self._speech_markers()[0]], mode="speech",
                       max_new_tokens=max_units + 1, sampling=sampling)

    def speech_to_text(self, units: Sequence[Sequence[int]], max_new_tokens: int = 60,
                       sampling: Sampling = Sampling()) -> List[str]:
        """A transcript for each utterance's unit ids ``[0, units)`` (greedy by default)."""
        requests = [self.transcription_request(u, max_new_tokens, sampling.for_request(i)) for i, u in enumerate(units)]
        return [self.decode_text(g.tokens) for g in self._generate(requests)]

    def transcription_request(self, units: Sequence[int], max_new_tokens: int, sampling: Sampling) -> Request:
        """The decoding request of speech -> text for one utterance's unit ids ``[0, units)``."""
        begin, end = self._speech_markers()
        return Request([self.bos, begin, *self.layout.to_global("speech", np.array(units)).tolist(), end],
                       mode="text", max_new_tokens=max_new_tokens, sampling=sampling)

    # ---- text ----------------------------------------------------------------------------------

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 64,
                 sampling: Sampling = Sampling(temperature=1.0)) -> List[str]:
        """Each text continued with text only (until ``<eos>`` or ``max_new_tokens``)."""
        requests = [self.completion_request(p, max_new_tokens, sampling.for_request(i), f"prompts[{i}]")
                    for i, p in enumerate(prompts)]
        return [self.decode_text(g.tokens) for g in self._generate(requests)]

    def completion_request(self, prompt: str, max_new_tokens: int, sampling: Sampling, name: str = "prompt") -> Request:
        """The decoding request of one text completion: ``<bos>`` and the text, then text only."""
        return Request([self.bos, *self._text_ids(prompt, name)], mode="text", max_new_tokens=max_new_tokens,
                       sampling=sampling)

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
                            sampling=sampling.for_request(i)) for i, p in enumerate(prompts)]
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
                                else ("speech", self.units_of(span)))
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

    def units_of(self, tokens: Sequence[int], max_units: Optional[int] = None) -> np.ndarray:
        """The speech unit ids ``[0, units)`` among generated ids, at most ``max_units`` of them (a
        speech request may take one id more than its units, for the end marker)."""
        start, stop = self.layout.id_range("speech")
        return np.array([t - start for t in tokens if start <= t < stop][:max_units], dtype=np.int64)

    def _generate(self, requests: List[Request], log=None) -> List[Generation]:
        return self.decoder.generate(requests, log=log)

