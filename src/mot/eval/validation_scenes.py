"""Validation scenes of a prepared corpus as the image analyses read them: each image's clean VAE
latent with its caption."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

from ..data.settings import open_corpus


def validation_images(corpus_dir: str | Path, count: int, keep: Optional[Callable[[List[int]], bool]] = None,
                      source: str = "shapescenes") -> List[dict]:
    """The first ``count`` images of ``source``'s validation latent shard whose caption ``keep``
    accepts: ``{"latent", "caption"}`` (the caption as unified text ids, read from the document
    around the image)."""
    corpus = open_corpus(corpus_dir)
    layout = corpus.layout("transfusion")
    text_start, text_stop = layout.id_range(layout.modalities[0])
    found: List[dict] = []
    for name, reader, _ in corpus.datasets("transfusion", "valid"):
        if corpus.manifest["shards"][name]["source"] != source:
            continue
        for index in range(len(reader)):
            stream = reader.stream(index)
            if stream.latents is None or len(stream.latents) != 1:
                continue
            caption = [int(t) for t in stream.tokens if text_start <= t < text_stop]
            if keep is None or keep(caption):
                found.append({"latent": stream.latents[0], "caption": caption})
            if len(found) == count:
                return found
    return found
