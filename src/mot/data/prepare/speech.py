"""The speech stage of ``mot prepare``: spoken texts synthesized with espeak-ng / flite, and the
25 Hz unit tokenizer fitted on the training utterances only.

What is spoken: ``speech_utterances`` ShapeScenes captions (of scenes beyond those used as images,
one paraphrase each) and ``speech_sentences`` sentences from the text sources (the first
sentence of a document, 20-120 characters), so speech covers more than one domain.

What is trained on the ``train`` utterances: the 25 Hz unit tokenizer, and the unit vocoder that
turns units back into audio (:mod:`mot.tokenizers.speech_vocoder`), measured on ``valid`` ones.
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
VOCODER = "speech_vocoder"
VOCODER_REPORT_UTTERANCES = 16


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


def speech_stage(out: Path, texts: List[str], splits: Dict[str, np.ndarray], text_tokenizer, config: PrepareConfig,
                 log):
    """Synthesize ``texts``, fit the unit tokenizer and (``config.vocoder_steps`` > 0) the unit
    vocoder on the ``train`` split. Returns the unit tokenizer, the manifest entries of both and
    per split ``[(doc_id, text ids, unit ids)]``.

    Everything is kept under ``out/tokenizers``; a rerun whose speech shards exist reuses it and
    returns no documents (nothing to rewrite). A corpus prepared before mot trained vocoders gets
    one on a rerun: its speech is synthesized again (the same audio: voices and texts are seeded)."""
    from ...tokenizers.speech_units import SpeechUnitTokenizer
    from ..sources import speech

    path, record = out / "tokenizers" / "speech_units", out / "tokenizers" / "speech_units.json"
    vocoder_record = out / "tokenizers" / f"{VOCODER}.json"
    shards_written = all((out / "shards" / f"speech-{split}").is_dir() for split in splits)
    vocoder_done = not config.vocoder_steps or vocoder_record.is_file()
    if path.is_dir() and record.is_file() and shards_written and vocoder_done:
        log("speech: reusing the unit tokenizer, the vocoder and the speech shards")
        return SpeechUnitTokenizer.load(path), _entries(record, vocoder_record), {}
    log(f"speech: synthesizing {len(texts)} texts with {', '.join(speech.available_engines())}")
    utterances = speech.synthesize_many(texts, seed=config.seed, workers=max(1, os.cpu_count() or 1), log=log)
    audio = {split: [utterances[i].audio for i in indices] for split, indices in splits.items()}
    if path.is_dir():
        log(f"speech tokenizer: reusing {path}")
        units = SpeechUnitTokenizer.load(path)
    else:
        log(f"speech tokenizer: fitting {config.speech_units} units")
        units = SpeechUnitTokenizer().fit(audio["train"], speech.SAMPLE_RATE, num_units=config.speech_units,
                                          seed=config.seed, log=log)
        units.save(path)
    write_json(record, {"fingerprint": units.fingerprint(), "num_units": units.num_units,
                        "speakers": len({u.speaker_id for u in utterances}),
                        "valid_unit_usage": units.usage(audio["valid"])})
    if config.vocoder_steps:
        vocoder_stage(out / "tokenizers", units, audio, config, log)
    if shards_written:
        return units, _entries(record, vocoder_record), {}
    documents = {split: [(f"speech:{i}", np.array(text_tokenizer.encode(utterances[i].text)),
                          units.encode(utterances[i].audio, speech.SAMPLE_RATE))
                         for i in progress(indices, f"speech units ({split})", log=log, unit="utterances")]
                 for split, indices in splits.items()}
    return units, _entries(record, vocoder_record), documents


def vocoder_stage(directory: Path, units, audio: Dict[str, List[np.ndarray]], config: PrepareConfig, log) -> None:
    """Fit the unit vocoder on the ``train`` audio (or reuse a saved one), measure it on up to
    ``VOCODER_REPORT_UTTERANCES`` ``valid`` utterances and record both in ``<VOCODER>.json``."""
    from ...tokenizers.speech_vocoder import UnitVocoder, VocoderTraining, fit_vocoder, vocoder_report

    path = directory / VOCODER
    if path.is_dir():
        log(f"speech vocoder: reusing {path}")
        vocoder = UnitVocoder.load(path)
    else:
        log(f"speech vocoder: training on {len(audio['train'])} utterances for {config.vocoder_steps} steps")
        training = VocoderTraining(steps=config.vocoder_steps, seed=config.seed)
        vocoder = fit_vocoder(units, audio["train"], training, log=log)
        vocoder.save(path)
    held_out = audio["valid"][:VOCODER_REPORT_UTTERANCES]
    log(f"speech vocoder: measuring on {len(held_out)} held-out utterances")
    write_json(directory / f"{VOCODER}.json", {"fingerprint": vocoder.fingerprint(),
                                               "metrics": vocoder_report(vocoder, units, held_out)})


def _entries(units_record: Path, vocoder_record: Path) -> Dict[str, dict]:
    entries = {"speech_units": json.loads(units_record.read_text())}
    if vocoder_record.is_file():
        entries[VOCODER] = json.loads(vocoder_record.read_text())
    return entries
