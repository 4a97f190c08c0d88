"""Documents -> token streams (and latents) for the shards ``mot prepare`` writes.

The layouts of the paper's settings:

* **Chameleon**: a captioned image becomes ``caption, image`` or, for a ``1 - caption_first``
  share chosen by the seed, ``image, caption``, with one caption paraphrase picked by the seed;
  image tokens are the VQ codes. A text document is its text.
* **Chameleon+Speech** adds spoken texts: speech only, speech then text (like ASR) or text then
  speech (like TTS); see :func:`speech_streams`.
* **Transfusion**: the same captioned documents (same caption, same order), the image span holding
  one placeholder id (the reader repeats it once per latent patch, so the shards do not depend on
  the patch size), the VAE latents kept beside the stream.

Every random choice is drawn from ``(seed, purpose, salt, index)``, so the same config gives the
same streams, and the Chameleon and Transfusion shards of a source pair the same captions.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

from ...errors import MotError
from ...tokenizers.vocab import VocabLayout
from ..document_files import load_image
from ..documents import Document, ImageSegment, TextSegment
from ..packing import TokenizedDocument, document_stream

SPEECH = "speech"
ENCODE_BATCH = 256


class StreamError(MotError, ValueError):
    """A document cannot be turned into a stream as configured; the message names it."""


def _tokens(doc_id: str, segments, layout: VocabLayout) -> np.ndarray:
    return document_stream(TokenizedDocument(doc_id, tuple(segments)), layout).tokens


def image_pixels(documents: Sequence[Document]) -> np.ndarray:
    """``uint8 [N, S, S, 3]``: the (first) image of each captioned document."""
    return np.stack([next(s for s in d.segments if isinstance(s, ImageSegment)).array for d in documents])


def encode_in_batches(encode, pixels: np.ndarray) -> np.ndarray:
    """Run an image tokenizer's ``encode`` over ``pixels`` in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([encode(pixels[i:i + ENCODE_BATCH]) for i in range(0, len(pixels), ENCODE_BATCH)]).numpy()


def caption_order(documents: Sequence[Document], text, caption_first: float, seed: int,
                  salt: int) -> List[Tuple[np.ndarray, bool]]:
    """For each captioned document: the chosen caption's text ids and whether it comes first."""
    chosen = []
    for index, document in enumerate(documents):
        rng = np.random.default_rng([seed, 3, salt, index])
        captions = [s.text for s in document.segments if isinstance(s, TextSegment)]
        caption = np.array(text.encode(captions[rng.integers(len(captions))]))
        chosen.append((caption, bool(rng.random() < caption_first)))
    return chosen


def captioned_streams(documents: Sequence[Document], order, image_ids: np.ndarray,
                      layout: VocabLayout) -> List[np.ndarray]:
    """Chameleon: caption and image tokens (``image_ids [N, T]``, the tokenizer's ids) in the
    order of :func:`caption_order`."""
    streams = []
    for document, (caption, first), ids in zip(documents, order, image_ids):
        segments = [("text", layout.to_global("text", caption)), ("image", layout.to_global("image", ids))]
        streams.append(_tokens(document.id, segments if first else segments[::-1], layout))
    return streams


def latent_layout(text_vocab: int) -> VocabLayout:
    """The Transfusion vocabulary: text, and one image id, the placeholder of a latent patch."""
    return VocabLayout({"text": text_vocab, "image": 1})


def latent_captioned_streams(documents: Sequence[Document], order, layout: VocabLayout) -> List[np.ndarray]:
    """Transfusion: as :func:`captioned_streams`, the image span one placeholder."""
    placeholders = np.full(1, layout.id_range("image")[0])
    streams = []
    for document, (caption, first) in zip(documents, order):
        segments = [("text", layout.to_global("text", caption)), ("image", placeholders)]
        streams.append(_tokens(document.id, segments if first else segments[::-1], layout))
    return streams


def text_streams(name: str, indices: Sequence[int], texts: Sequence[str], text,
                 layout: VocabLayout) -> List[np.ndarray]:
    """Text-only documents, named ``name:index`` after their place in the source."""
    return [_tokens(f"{name}:{i}", [("text", layout.to_global("text", np.array(text.encode(t))))], layout)
            for i, t in zip(indices, texts)]


def user_streams(documents: Sequence[Document], text, vq, speech_units, layout: VocabLayout,
                 image_size: int) -> List[np.ndarray]:
    """A user document keeps its segments in order: text, images (through the VQ) and speech
    (through the unit tokenizer, which exists only when the corpus has speech)."""
    from ..sources.speech import SAMPLE_RATE, read_wav, resample

    streams = []
    for document in documents:
        segments = []
        for segment in document.segments:
            if isinstance(segment, TextSegment):
                segments.append(("text", layout.to_global("text", np.array(text.encode(segment.text)))))
            elif isinstance(segment, ImageSegment):
                if vq is None:
                    raise StreamError(f"document {document.id!r} has an image, but no VQ tokenizer is "
                                      f"trained: add vq to image_tokenizers")
                with torch.no_grad():
                    codes = vq.encode(load_image(segment, size=image_size)[None])[0].numpy()
                segments.append(("image", layout.to_global("image", codes)))
            else:
                if speech_units is None:
                    raise StreamError(f"document {document.id!r} has a speech segment, but speech is off: "
                                      f"set speech_utterances > 0 so a speech tokenizer is trained")
                audio, rate = read_wav(segment.path)
                units = speech_units.encode(resample(audio, rate, SAMPLE_RATE), SAMPLE_RATE)
                segments.append((SPEECH, layout.to_global(SPEECH, units)))
        streams.append(_tokens(document.id, segments, layout))
    return streams


def user_latent_streams(documents: Sequence[Document], text, vae, layout: VocabLayout,
                        image_size: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Transfusion form of user documents: ``(streams, latents per document)``. Speech segments
    have no place in this setting; the caller leaves such corpora out."""
    placeholders = np.full(1, layout.id_range("image")[0])
    streams, latents = [], []
    for document in documents:
        segments, images = [], []
        for segment in document.segments:
            if isinstance(segment, TextSegment):
                segments.append(("text", layout.to_global("text", np.array(text.encode(segment.text)))))
            else:
                images.append(load_image(segment, size=image_size))
                segments.append(("image", placeholders))
        streams.append(_tokens(document.id, segments, layout))
        shape = (0, *vae.config.latent_shape)
        latents.append(encode_in_batches(vae.encode, np.stack(images)) if images else np.zeros(shape, np.float32))
    return streams, latents


def speech_streams(documents, layout: VocabLayout, speech_only: float, seed: int) -> List[np.ndarray]:
    """Spoken texts ``[(doc_id, text ids, unit ids)]`` as documents: a ``speech_only`` share holds
    the speech alone; the rest is half speech then text (like ASR), half text then speech (like
    TTS), chosen by the seed."""
    streams = []
    for index, (doc_id, words, units) in enumerate(documents):
        draw = np.random.default_rng([seed, 5, index]).random()
        speech = (SPEECH, layout.to_global(SPEECH, units))
        if draw < speech_only:
            segments = [speech]
        elif draw < speech_only + (1 - speech_only) / 2:
            segments = [speech, ("text", layout.to_global("text", words))]
        else:
            segments = [("text", layout.to_global("text", words)), speech]
        streams.append(_tokens(doc_id, segments, layout))
    return streams
