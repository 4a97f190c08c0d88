"""Caption dropout for classifier-free guidance (Transfusion).

Transfusion drops an image's caption with some probability, so that the model also learns to
generate images unconditionally; at sampling time the conditional and unconditional predictions
are mixed (classifier-free guidance). Here a caption is the host-modality (text) run that
*immediately precedes* a continuous span: the text between ``<bos>`` (or the end of the previous
span) and the span's begin marker::

    <bos> caption <boi> ... <eoi> <eos>   ->   <bos> <boi> ... <eoi> <eos>

Text after a span (the caption of an image-then-caption document) is never dropped: it is what
captioning learns to produce. In a document with several images, the text between two images
counts as the caption of the second. Latents are unchanged: every span keeps its own.
"""

from __future__ import annotations

import numpy as np

from ..tokenizers.vocab import VocabLayout
from .packing import DocumentStream
from .shards import stream_from_tokens


def drop_captions(stream: DocumentStream, layout: VocabLayout, modality: str, probability: float,
                  rng: np.random.Generator) -> DocumentStream:
    """``stream`` with the caption of each ``modality`` span removed with ``probability``.

    One draw from ``rng`` per ``modality`` span, in stream order, whether or not the span has a
    caption: the decisions then depend only on ``rng`` and the document, never on what was dropped
    before. The stream is returned as is when nothing is dropped.
    """
    host_start, host_stop = layout.id_range(layout.modalities[0])
    tokens = stream.tokens
    keep = np.ones(tokens.size, dtype=bool)
    previous_end = 0  # the index of <bos>, then of the last span's end marker
    for span_start, span_stop, span_modality in stream.spans:
        if span_modality == modality and rng.random() < probability:
            gap = slice(previous_end + 1, span_start - 1)  # between the markers, the begin marker excluded
            keep[gap] &= (tokens[gap] < host_start) | (tokens[gap] >= host_stop)  # text ids only, never specials
        previous_end = span_stop
    if keep.all():
        return stream
    return stream_from_tokens(stream.doc_id, tokens[keep], layout, stream.latents)
