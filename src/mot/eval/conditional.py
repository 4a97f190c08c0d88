"""Conditional perplexities: how well a model predicts one half of a paired document given the
other, the paper's evaluation of the Chameleon setting besides the validation loss (§3.2.1:
text-to-image and image-to-text perplexity on captioned image sets; here also text-to-speech and
speech-to-text in the Chameleon+Speech setting).

The pairs are a split's documents that hold text and exactly one span of another modality (a
captioned image, an utterance with its text). Each pair is scored in both orders, whatever order
its document had in the corpus: ``<bos> text <boi> image <eoi> <eos>`` gives text -> image (the
cross-entropy of the image's tokens, ``<eoi>`` excluded), ``<bos> <boi> image <eoi> text <eos>``
gives image -> text (the caption's text tokens, ``<eos>`` excluded). Perplexity is ``exp`` of the
mean over all scored tokens of a direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch

from ..data.packing import IGNORE, TokenizedDocument, document_stream, rows_to_batch
from ..data.settings import Corpus
from ..model.transformer import MoTModel
from ..objectives.autoregressive import next_token_loss
from ..tokenizers.vocab import VocabLayout

#: documents packed into one forward pass
BATCH_DOCUMENTS = 16


@dataclass(frozen=True)
class Pair:
    """The text ids and the other modality's ids (unified, markers excluded) of one document."""

    source: str
    text: np.ndarray
    other: np.ndarray


def direction_name(given: str, predicted: str) -> str:
    """``"text_to_image"``: the key of predicting ``predicted`` given ``given``."""
    return f"{given}_to_{predicted}"


def paired_documents(corpus: Corpus, setting: str, split: str, modality: str, per_source: int) -> List[Pair]:
    """Up to ``per_source`` pairs of text and one ``modality`` span from each source of ``split``,
    in shard order."""
    layout = corpus.layout(setting)
    text = layout.modalities[0]
    text_start, text_stop = layout.id_range(text)
    taken: Dict[str, int] = {}
    pairs: List[Pair] = []
    for name, reader, _ in corpus.datasets(setting, split):
        source = corpus.manifest["shards"][name]["source"]
        for index in range(len(reader)):
            if taken.get(source, 0) >= per_source:
                break
            stream = reader.stream(index)
            if len(stream.spans) != 1 or stream.spans[0][2] != modality:
                continue
            start, stop, _ = stream.spans[0]
            tokens = stream.tokens
            text_ids = tokens[(tokens >= text_start) & (tokens < text_stop)]
            if text_ids.size == 0:
                continue
            pairs.append(Pair(source, text_ids, tokens[start:stop]))
            taken[source] = taken.get(source, 0) + 1
    return pairs


@torch.no_grad()
def conditional_losses(model: MoTModel, layout: VocabLayout, pairs: Sequence[Pair],
                       modality: str) -> Dict[str, Dict[str, float]]:
    """``{"text_to_<modality>": {...}, "<modality>_to_text": {...}}``, each with the summed
    cross-entropy ``nll_sum``, the scored ``tokens``, their mean ``nll`` and ``perplexity``, and
    the number of ``documents``; also per source under ``by_source``. A document longer than the
    model's context (``<bos>``, both halves, two markers, ``<eos>``) is left out and counted in
    ``too_long``."""
    text = layout.modalities[0]
    fitting = [p for p in pairs if p.text.size + p.other.size + 4 <= model.config.max_seq_len]
    results = {}
    for given, predicted in ((text, modality), (modality, text)):
        by_source: Dict[str, List[float]] = {}
        for batch_pairs in _chunks(fitting, BATCH_DOCUMENTS):
            documents = [TokenizedDocument(f"pair:{i}", tuple((m, {text: pair.text, modality: pair.other}[m])
                                                              for m in (given, predicted)))
                         for i, pair in enumerate(batch_pairs)]
            for source, (total, count) in zip((p.source for p in batch_pairs),
                                              _scored(model, layout, documents, predicted)):
                sums = by_source.setdefault(source, [0.0, 0, 0])
                sums[0] += total
                sums[1] += count
                sums[2] += 1
        results[direction_name(given, predicted)] = {**_summary(by_source), "too_long": len(pairs) - len(fitting)}
    return results


def _scored(model: MoTModel, layout: VocabLayout, documents: List[TokenizedDocument],
            predicted: str) -> Iterator[Tuple[float, int]]:
    """``(summed cross-entropy, tokens)`` of ``predicted``'s content ids in each document (one row
    each, padded to the longest)."""
    streams = [document_stream(d, layout) for d in documents]
    longest = max(s.tokens.size for s in streams)
    batch = rows_to_batch([[(s, 0, s.tokens.size)] for s in streams], longest, layout,
                          model.config.modality_tower_index)
    start, stop = layout.id_range(predicted)
    targets = batch.targets
    targets = torch.where((targets >= start) & (targets < stop), targets, torch.full_like(targets, IGNORE))
    logits = model(**batch.model_inputs()).logits
    for row in range(len(documents)):
        loss = next_token_loss(logits[row:row + 1], targets[row:row + 1], batch.modality_ids[row:row + 1],
                               len(layout.modalities))
        yield float(loss.sum_per_modality.sum()), int(loss.count_per_modality.sum())


def _summary(by_source: Dict[str, List[float]]) -> Dict[str, object]:
    def entry(total: float, count: int, documents: int) -> Dict[str, float]:
        nll = total / count if count else float("nan")
        return {"nll": nll, "perplexity": math.exp(nll) if count else float("nan"), "tokens": int(count),
                "documents": int(documents), "nll_sum": total}

    totals = [sum(values[i] for values in by_source.values()) for i in range(3)] if by_source else [0.0, 0, 0]
    return {**entry(*totals), "by_source": {source: entry(*values) for source, values in by_source.items()}}


def _chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]
