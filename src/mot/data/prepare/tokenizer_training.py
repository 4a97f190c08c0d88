"""The tokenizer stage of ``mot prepare``, trained on the train split only: byte-level BPE for
text (or a tokenizer made elsewhere, ``text_tokenizer``, imported as it is) and the image tokenizers of ``image_tokenizers`` (``vq``: the FSQ VQ of the discrete
settings; ``vae``: the KL-VAE of Transfusion). The speech units are fitted in :mod:`.speech`.

A tokenizer already saved under ``out/tokenizers`` is loaded, not trained again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import numpy as np

from ...tokenizers.image_vae import ImageVAE, ImageVAEConfig, train_image_vae
from ...tokenizers.image_vq import ImageVQ, ImageVQConfig, train_image_vq
from ...tokenizers.text import BPETokenizer
from .config import PrepareConfig, PrepareError
from .records import write_json


def text_tokenizer(path: Path, texts: List[str], config: PrepareConfig, log) -> BPETokenizer:
    """The BPE tokenizer saved at ``path``, trained on ``texts`` first if there is none, or the
    tokenizer ``config.text_tokenizer`` names (imported as it is)."""
    imported = _imported(config)
    if path.is_dir():
        log(f"text tokenizer: reusing {path}")
        saved = BPETokenizer.load(path)
        if imported is not None and saved.to_str() != imported.to_str():
            raise PrepareError(f"{path} holds another text tokenizer than text_tokenizer={config.text_tokenizer!r}: "
                               f"prepare into a new out_dir (the shards are in that tokenizer's ids)")
        return saved
    if imported is not None:
        log(f"text tokenizer: importing {config.text_tokenizer} ({imported.vocab_size} ids)")
        imported.save(path)
        return BPETokenizer.load(path)
    if not texts:
        raise PrepareError("no text to train the text tokenizer on: every text source and caption is missing")
    log(f"text tokenizer: training byte-level BPE ({config.text_vocab} entries) on {len(texts)} texts")
    tokenizer = BPETokenizer.train(texts, vocab_size=config.text_vocab)
    tokenizer.save(path)
    return tokenizer


def _imported(config: PrepareConfig) -> Optional[BPETokenizer]:
    if not config.text_tokenizer:
        return None
    try:
        return BPETokenizer.import_file(config.text_tokenizer)
    except (OSError, ValueError) as error:
        raise PrepareError(f"text_tokenizer={config.text_tokenizer!r}: {error}") from None


def image_tokenizer(kind: str, out: Path, images: np.ndarray, config: PrepareConfig, log):
    """The trained ``vq`` or ``vae`` and its held-out metrics (kept beside it, so a rerun reports
    them too)."""
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
                           seed=config.seed, log_every=0, log=log)
    model.save(path)
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    write_json(record, metrics)
    return model, metrics
