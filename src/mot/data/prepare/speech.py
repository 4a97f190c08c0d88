"""The speech stage of ``mot prepare``: spoken texts synthesized with espeak-ng / flite, and the
25 Hz unit tokenizer fitted on the training utterances only.

What is spoken: ``speech_utterances`` ShapeScenes captions (of scenes beyond those used as images,
one paraphrase each) and ``speech_sentences`` sentences from the text sources (the first
sentence of a document, 20-120 characters), so speech covers more than one domain.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ...progress import progress
from ..documents import TextSegment
from .config import PrepareConfig
from .records import write_json

SENTENCE_CHARACTERS = (20, 120)


def caption_texts(count: int, seed: int, start: int) -> List[str]:
    """Captions of ShapeScenes scenes ``start ..`` (past the image ones), one paraphrase each."""
    from ..sources.shapescenes import shapescenes

    texts = []
    for index, document in enumerate(shapescenes(count, seed=seed, size=8, start=start)):
        captions = [s.text for s in document.segments if isinstance(s, TextSegment)]
        texts.append(captions[np.random.default_rng([seed, 4, index]).integers(len(captions))])
    return texts


def first_sentence(text: str) -> str | None:
    """The first sentence of ``text`` on one line, if its length is in ``SENTENCE_CHARACTERS``."""
    line = " ".join(text.split())
    for end in (". ", "; ", "? ", "! "):
        if end in line:
            line = line[:line.index(end) + 1]
    low, high = SENTENCE_CHARACTERS
    return line if low <= len(line) <= high and any(c.isalpha() for c in line) else None


def sentence_texts(documents: Dict[str, Sequence[str]], count: int, seed: int) -> List[str]:
    """``count`` first sentences drawn from the text sources (in a seeded order, sources interleaved)."""
    candidates = [s for texts in documents.values() for s in map(first_sentence, texts) if s]
    order = np.random.default_rng([seed, 6]).permutation(len(candidates))
    return [candidates[i] for i in order[:count]]


def speech_texts(config: PrepareConfig, texts: Dict[str, List[str]]) -> List[str]:
    """What is spoken: ``speech_utterances`` captions, then ``speech_sentences`` sentences of the
    text documents ``texts`` (by source)."""
    return (caption_texts(config.speech_utterances, config.seed, start=config.shapescenes)
            + sentence_texts(texts, config.speech_sentences, config.seed))


def speech_stage(out: Path, texts: List[str], splits: Dict[str, np.ndarray], text_tokenizer, num_units: int,
                 seed: int, log):
    """Synthesize ``texts`` and fit the unit tokenizer on the ``train`` split. Returns the
    tokenizer, its manifest entry and per split ``[(doc_id, text ids, unit ids)]``.

    The tokenizer and the entry are kept under ``out/tokenizers``; a rerun whose speech shards
    exist reuses them and returns no documents (nothing to rewrite)."""
    from ...tokenizers.speech_units import SpeechUnitTokenizer
    from ..sources import speech

    path = out / "tokenizers" / "speech_units"
    record = out / "tokenizers" / "speech_units.json"
    if path.is_dir() and record.is_file() and all((out / "shards" / f"speech-{split}").is_dir() for split in splits):
        log("speech: reusing the unit tokenizer and the speech shards")
        return SpeechUnitTokenizer.load(path), json.loads(record.read_text()), {}
    log(f"speech: synthesizing {len(texts)} texts with {', '.join(speech.available_engines())}")
    utterances = speech.synthesize_many(texts, seed=seed, workers=max(1, os.cpu_count() or 1), log=log)
    if path.is_dir():
        log(f"speech tokenizer: reusing {path}")
        units = SpeechUnitTokenizer.load(path)
    else:
        log(f"speech tokenizer: fitting {num_units} units")
        units = SpeechUnitTokenizer().fit([utterances[i].audio for i in splits["train"]], speech.SAMPLE_RATE,
                                          num_units=num_units, seed=seed, log=log)
        units.save(path)
    entry = {"fingerprint": units.fingerprint(), "num_units": units.num_units,
             "speakers": len({u.speaker_id for u in utterances}),
             "valid_unit_usage": units.usage([utterances[i].audio for i in splits["valid"]])}
    write_json(record, entry)
    documents = {split: [(f"speech:{i}", np.array(text_tokenizer.encode(utterances[i].text)),
                          units.encode(utterances[i].audio, speech.SAMPLE_RATE))
                         for i in progress(indices, f"speech units ({split})", log=log, unit="utterances")]
                 for split, indices in splits.items()}
    return units, entry, documents
