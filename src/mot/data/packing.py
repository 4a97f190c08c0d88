"""Packing tokenized documents into fixed-length rows: the batch the model takes.

A document becomes one token stream::

    <bos> text ids ... <boi> image ids ... <eoi> text ids ... <bos_speech> speech ids <eos_speech> <eos>

Streams are placed in rows of ``seq_len`` tokens in order, first fit: a document that does not fit
in what is left of a row starts the next row (the rest is padding); a document longer than a row
is cut into pieces, never inside an image or speech span. Every row carries the metadata the
model needs (docs/design.md, "The data flow"): modality ids, positions restarting per document, document ids,
bidirectional span ids, next-token targets, and the routing plan computed here, on the host.

In the Transfusion setting an image span holds placeholder ids, one per latent patch, and the
stream carries the image's VAE latents; the batch then also holds every image's latents and
where its span starts, and no next-token target is set from ``<boi>`` to the last patch (the
image is trained by the diffusion loss, and ``<eoi>`` always follows the last patch). It also
marks the images that text follows (image -> caption): the trainer caps their noise for some
examples, as Transfusion does, so that captioning learns from nearly clean images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import MotError
from ..model.routing import RoutingPlan, build_routing_plan
from ..tokenizers.vocab import VocabLayout

#: target value for positions that train nothing (cross-entropy's default ignore index)
IGNORE = -100
#: document id of padding tokens (they only see each other)
PAD_DOCUMENT = -1


class PackingError(MotError, ValueError):
    """A document cannot be packed (for example an image span longer than a row)."""


@dataclass(frozen=True)
class TokenizedDocument:
    """A document as unified token ids: ``segments`` is ``[(modality, ids), ...]`` in order,
    ids without begin/end markers (packing adds them)."""

    doc_id: str
    segments: Tuple[Tuple[str, np.ndarray], ...]


@dataclass(frozen=True)
class DocumentStream:
    """One document's token stream and its non-host spans ``[(start, stop), ...]`` (content only,
    markers excluded), with the modality of each span; ``latents`` ``[n, C, h, w]``, in the
    Transfusion setting, are the latents of its ``n`` continuous spans in order."""

    doc_id: str
    tokens: np.ndarray
    spans: Tuple[Tuple[int, int, str], ...]
    latents: Optional[np.ndarray] = None


def document_stream(document: TokenizedDocument, layout: VocabLayout) -> DocumentStream:
    """``<bos>``, each segment (non-host segments between their markers), ``<eos>``."""
    host = layout.modalities[0]
    pieces: List[np.ndarray] = [np.array([layout.special("<bos>")])]
    spans: List[Tuple[int, int, str]] = []
    length = 1
    for modality, ids in document.segments:
        ids = np.asarray(ids, dtype=np.int64)
        start, stop = layout.id_range(modality)
        if ids.size and ((ids < start) | (ids >= stop)).any():
            raise PackingError(f"document {document.doc_id!r}: a {modality} segment holds ids outside "
                               f"[{start}, {stop})")
        if modality == host:
            pieces.append(ids)
            length += ids.size
            continue
        begin, end = layout.markers(modality)
        spans.append((length + 1, length + 1 + ids.size, modality))
        pieces.extend([np.array([begin]), ids, np.array([end])])
        length += ids.size + 2
    pieces.append(np.array([layout.special("<eos>")]))
    return DocumentStream(document.doc_id, np.concatenate(pieces).astype(np.int64), tuple(spans))


def piece_bounds(stream: DocumentStream, seq_len: int) -> List[Tuple[int, int]]:
    """The ``(start, stop)`` pieces a stream is cut into so that each fits in a row."""
    bounds = [0, *_cut_points(stream, seq_len), stream.tokens.size]
    return list(zip(bounds[:-1], bounds[1:]))


def _cut_points(stream: DocumentStream, seq_len: int) -> List[int]:
    """Where to cut a stream longer than a row: at most ``seq_len`` apart, never inside a span
    (markers included)."""
    cuts, start = [], 0
    total = stream.tokens.size
    while total - start > seq_len:
        cut = start + seq_len
        for span_start, span_stop, modality in stream.spans:
            if span_start - 1 < cut < span_stop + 1:  # the cut would split <begin> ids <end>
                cut = span_start - 1
                if cut <= start:
                    raise PackingError(f"document {stream.doc_id!r}: a {modality} span of "
                                       f"{span_stop - span_start + 2} tokens (markers included) does not "
                                       f"fit in a row of {seq_len}")
                break
        cuts.append(cut)
        start = cut
    return cuts


@dataclass
class PackedBatch:
    """``[B, L]`` arrays for the model plus the routing plan. ``targets[b, i]`` is the token the
    model must predict at position i (the next token of the same document), or ``IGNORE``."""

    tokens: torch.Tensor
    modality_ids: torch.Tensor
    positions: torch.Tensor
    document_ids: torch.Tensor
    span_ids: torch.Tensor
    targets: torch.Tensor
    plan: RoutingPlan
    #: the documents (or pieces of documents) in the batch, in order
    doc_ids: Tuple[str, ...] = ()
    #: Transfusion: ``[N, C, h, w]`` float32 latents of the batch's images, in row-major order
    latents: Optional[torch.Tensor] = None
    #: Transfusion: ``[N, 2]`` (row, column) of each image's first placeholder token
    latent_starts: Optional[torch.Tensor] = None
    #: Transfusion: ``[N]`` bool, True where the image's document piece has text after the image
    latent_before_text: Optional[torch.Tensor] = None

    def model_inputs(self) -> dict:
        """Keyword arguments for ``MoTModel.forward``."""
        return dict(tokens=self.tokens, modality_ids=self.modality_ids, positions=self.positions,
                    document_ids=self.document_ids, span_ids=self.span_ids, plan=self.plan)


def pack(documents: Iterable[TokenizedDocument], seq_len: int, layout: VocabLayout,
         modality_tower_index: Sequence[int], bidirectional: Sequence[str] = ()) -> PackedBatch:
    """Pack ``documents`` into as many rows of ``seq_len`` as they need.

    ``modality_tower_index`` comes from the model config (``ModelConfig.modality_tower_index``).
    Spans of the modalities in ``bidirectional`` (``["image"]`` in the Transfusion setting) get
    span ids, so their tokens attend to each other in both directions.
    """
    if seq_len < 2:
        raise PackingError(f"seq_len={seq_len}: a row needs at least 2 tokens")
    unknown = set(bidirectional) - set(layout.modalities)
    if unknown:
        raise PackingError(f"bidirectional={list(bidirectional)}: {sorted(unknown)} not in {layout.modalities}")
    rows: List[List[Tuple[DocumentStream, int, int]]] = [[]]  # (stream, piece start, piece stop)
    used = 0
    for document in documents:
        stream = document_stream(document, layout)
        for start, stop in piece_bounds(stream, seq_len):
            if stop - start > seq_len - used:
                rows.append([])
                used = 0
            rows[-1].append((stream, start, stop))
            used += stop - start
    if not rows[-1]:
        rows.pop()
    if not rows:
        raise PackingError("no documents to pack")
    return rows_to_batch(rows, seq_len, layout, modality_tower_index, bidirectional)


def rows_to_batch(rows: Sequence[Sequence[Tuple[DocumentStream, int, int]]], seq_len: int, layout: VocabLayout,
                  modality_tower_index: Sequence[int], bidirectional: Sequence[str] = (),
                  continuous: Optional[str] = None,
                  latent_shape: Optional[Tuple[int, int, int]] = None) -> PackedBatch:
    """Rows of ``(stream, start, stop)`` pieces -> the padded ``[rows, seq_len]`` batch.

    With ``continuous`` (``"image"`` in the Transfusion setting) every stream must carry latents
    for its spans of that modality; they are gathered into ``latents`` / ``latent_starts``, and
    ``latent_before_text`` says which of them host-modality ids (not specials) follow within
    their piece. ``latent_shape`` ``(C, h, w)`` shapes ``latents`` when no piece holds an image
    (``[0, C, h, w]``, which the model takes: its patch path then runs on no image).
    """
    bidirectional = set(bidirectional)
    host_start, host_stop = layout.id_range(layout.modalities[0])
    latents: List[np.ndarray] = []
    latent_starts: List[Tuple[int, int]] = []
    latent_before_text: List[bool] = []
    shape = (len(rows), seq_len)
    tokens = np.full(shape, layout.special("<pad>"), dtype=np.int64)
    documents = np.full(shape, PAD_DOCUMENT, dtype=np.int64)
    positions = np.zeros(shape, dtype=np.int64)
    spans = np.zeros(shape, dtype=np.int64)
    targets = np.full(shape, IGNORE, dtype=np.int64)
    for b, row in enumerate(rows):
        at, next_span = 0, 1
        for document_index, (stream, start, stop) in enumerate(row):
            n = stop - start
            tokens[b, at:at + n] = stream.tokens[start:stop]
            documents[b, at:at + n] = document_index
            positions[b, at:at + n] = np.arange(n)
            targets[b, at:at + n - 1] = stream.tokens[start + 1:stop]
            image = 0  # index of the next continuous span of this stream
            for span_start, span_stop, modality in stream.spans:
                inside = start <= span_start and span_stop <= stop
                if modality in bidirectional and inside:
                    spans[b, at + span_start - start:at + span_stop - start] = next_span
                    next_span += 1
                if modality == continuous:
                    if inside:
                        latents.append(_latent_of(stream, image, continuous))
                        latent_starts.append((b, at + span_start - start))
                        after = stream.tokens[span_stop + 1:stop]  # past the end marker
                        latent_before_text.append(bool(((after >= host_start) & (after < host_stop)).any()))
                        # <boi> and the patches predict nothing: the diffusion loss trains them
                        targets[b, at + span_start - start - 1:at + span_stop - start] = IGNORE
                    image += 1
            at += n
        # padding positions restart at 0 too, so they never exceed a row
        positions[b, at:] = np.arange(seq_len - at)
    modality_ids = layout.modality_of(tokens)
    modality_tensor = torch.from_numpy(modality_ids)
    batch = PackedBatch(torch.from_numpy(tokens), modality_tensor, torch.from_numpy(positions),
                        torch.from_numpy(documents), torch.from_numpy(spans), torch.from_numpy(targets),
                        build_routing_plan(modality_tensor, modality_tower_index),
                        tuple(stream.doc_id if (start, stop) == (0, stream.tokens.size) else
                              f"{stream.doc_id}[{start}:{stop}]" for row in rows for stream, start, stop in row))
    if continuous is not None:
        shape = next((s.latents.shape[1:] for row in rows for s, _, _ in row
                      if s.latents is not None and len(s.latents)), latent_shape or (0, 0, 0))
        batch.latents = torch.from_numpy(np.stack(latents).astype(np.float32) if latents
                                         else np.zeros((0, *shape), dtype=np.float32))
        batch.latent_starts = torch.tensor(latent_starts, dtype=torch.int64).reshape(-1, 2)
        batch.latent_before_text = torch.tensor(latent_before_text, dtype=torch.bool).reshape(-1)
    return batch


def _latent_of(stream: DocumentStream, index: int, modality: str) -> np.ndarray:
    if stream.latents is None or index >= len(stream.latents):
        raise PackingError(f"document {stream.doc_id!r}: {modality} span {index} has no latent; "
                           f"continuous spans need a shard written with latents")
    return np.asarray(stream.latents[index])
