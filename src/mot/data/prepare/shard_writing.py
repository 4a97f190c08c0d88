"""The shard stage of ``mot prepare``: one token shard per source and split under ``shards/``, in
the layouts of :mod:`.streams` (Chameleon, Chameleon+Speech), and with the VAE the Transfusion
form of every source with images under ``latent_shards/``. A shard that exists is kept as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from ...progress import Progress
from ...tokenizers.vocab import VocabLayout
from ..documents import ImageSegment, SpeechSegment
from ..shards import write_shard
from . import streams
from .config import PrepareConfig
from .gathering import Source
from .records import shard_entry
from .streams import SPEECH


def write_shards(out: Path, sources: List[Source], speech_documents: dict, text, vq, vae, speech_units,
                 layout: VocabLayout, latent: dict | None, config: PrepareConfig, log) -> Dict[str, dict]:
    """Every missing shard of every source and split, then the speech shards; returns the
    manifest's entries of all the shards, keyed by their path under ``out``."""
    shards: Dict[str, dict] = {}
    total = sum(len(indices) for source in sources for indices in source.splits.values())
    total += sum(len(documents) for documents in speech_documents.values())
    with Progress("shards", total, log=log, unit="documents") as tracker:
        for source in sources:
            for split in source.splits:
                if len(source.splits[split]):
                    _write_source_shards(out, source, split, text, vq, vae, speech_units, layout, latent, config,
                                         shards, log)
                    tracker.update(len(source.splits[split]))
        for split in ("train", "valid") if speech_units is not None else ():
            directory, documents = out / "shards" / f"{SPEECH}-{split}", speech_documents.get(split)
            if documents and not directory.is_dir():
                write_shard(directory, streams.speech_streams(documents, layout, config.speech_only, config.seed),
                            layout, extra={"source": SPEECH, "split": split})
                log(f"wrote {directory} ({len(documents)} documents)")
            if directory.is_dir():
                shards[f"shards/{directory.name}"] = shard_entry(directory, "tokens")
            tracker.update(len(documents or ()))
    return shards


def _write_source_shards(out: Path, source: Source, split: str, text, vq, vae, speech_units, layout: VocabLayout,
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
        shards[f"shards/{name}"] = shard_entry(directory, "tokens")
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
    shards[f"latent_shards/{name}"] = shard_entry(directory, "latents")

