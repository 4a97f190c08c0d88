"""Shards: pre-tokenized document streams on disk, memory-mapped for reading.

A shard directory holds ``tokens.npy`` (int32, every document's stream one after another: unified
ids with ``<bos>``, ``<eos>`` and begin/end markers in place, so spans can be recovered from the
tokens alone), ``offsets.npy`` (int64 ``[documents + 1]``) and ``shard.json`` (counts, the
vocabulary layout and the SHA-256 of every array). Readers check the hashes before use, so a
shard that was truncated or altered is reported instead of read.

A shard for the Transfusion setting also holds ``latents.npy`` (float32 ``[images, C, h, w]``: the
VAE latents of every image, in the order the image spans occur) and ``latent_offsets.npy``
(int64 ``[documents + 1]``); its image spans hold placeholder ids that the model replaces with
patches of these latents. Prepare writes one placeholder per image, so the shard does not depend
on the patch size: a reader made with ``patches_per_image=P`` repeats it ``P`` times.

A reader may use a vocabulary layout other than the one the shard was written with, as long as
it has every token the shard uses: ids are translated on read (one corpus tokenized with text,
image and speech serves a text-and-image model through its text and image shards).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

import numpy as np

from ..errors import MotError
from ..io import sha256_file
from ..tokenizers.vocab import VocabError, VocabLayout
from .packing import DocumentStream

META_FILE = "shard.json"


class ShardError(MotError, RuntimeError):
    """A shard is missing, incomplete or does not match its recorded hashes."""


def write_shard(directory: str | Path, streams: Iterable[np.ndarray], layout: VocabLayout,
                extra: dict | None = None, latents: Sequence[np.ndarray] | None = None,
                continuous: str = "image") -> Path:
    """Write document streams as a shard; the directory appears complete or not at all.

    ``latents`` (one float array ``[n_i, C, h, w]`` per document, ``n_i`` its number of
    ``continuous`` spans) makes a Transfusion shard.
    """
    directory = Path(directory)
    if directory.exists():
        raise ShardError(f"{directory} already exists; remove it to rewrite the shard")
    arrays = [np.asarray(s, dtype=np.int64) for s in streams]
    if not arrays:
        raise ShardError(f"{directory}: no documents to write")
    if latents is not None:
        latent_offsets, stacked = _check_latents(directory, arrays, latents, layout, continuous)
    tokens = np.concatenate(arrays)
    if tokens.min() < 0 or tokens.max() >= layout.vocab_size:
        raise ShardError(f"{directory}: token ids outside the vocabulary [0, {layout.vocab_size})")
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([a.size for a in arrays])
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        np.save(temporary / "tokens.npy", tokens.astype(np.int32))
        np.save(temporary / "offsets.npy", offsets)
        if latents is not None:
            np.save(temporary / "latents.npy", stacked)
            np.save(temporary / "latent_offsets.npy", latent_offsets)
            extra = {**(extra or {}), "continuous": continuous, "latent_shape": list(stacked.shape[1:])}
        counts = np.bincount(layout.modality_of(tokens), minlength=len(layout.modalities))
        meta = {"documents": len(arrays), "tokens": int(tokens.size),
                "tokens_per_modality": dict(zip(layout.modalities, (int(c) for c in counts))),
                "vocab": layout.to_dict(),
                "sha256": {path.name: sha256_file(path) for path in sorted(temporary.glob("*.npy"))},
                **(extra or {})}
        (temporary / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(temporary, directory)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
    return directory


def _check_latents(directory: Path, streams: List[np.ndarray], latents: Sequence[np.ndarray],
                   layout: VocabLayout, continuous: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(latent_offsets, stacked latents)``, after checking there is one latent per span."""
    if len(latents) != len(streams):
        raise ShardError(f"{directory}: {len(latents)} latent arrays for {len(streams)} documents")
    begin = layout.markers(continuous)[0]
    shapes = {tuple(np.shape(a)[1:]) for a in latents if len(a)}
    if len(shapes) > 1 or any(np.ndim(a) != 4 for a in latents):
        raise ShardError(f"{directory}: latents must be [n, C, h, w] arrays of one shape; got {sorted(shapes)}")
    for index, (stream, array) in enumerate(zip(streams, latents)):
        spans = int((stream == begin).sum())
        if spans != len(array):
            raise ShardError(f"{directory}: document {index} has {spans} {continuous} spans but "
                             f"{len(array)} latents")
    offsets = np.zeros(len(latents) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in latents])
    shape = shapes.pop() if shapes else (0, 0, 0)
    stacked = np.concatenate([np.asarray(a, dtype=np.float32).reshape(-1, *shape) for a in latents])
    if not np.isfinite(stacked).all():
        raise ShardError(f"{directory}: latents hold NaN or infinite values")
    return offsets, stacked


def _load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """The array of the ``.npy`` file ``path`` (memory-mapped if ``mmap``). A shard holds plain
    numbers, so nothing is unpickled: an array of Python objects, which would run code when
    unpickled, is refused like any other unreadable file, with a :class:`ShardError` naming it."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        reason = str(error).split(". ")[0].rstrip(".")  # not numpy's advice on loading it unsafely
        raise ShardError(f"{path} is not a readable .npy array of numbers: {reason}") from None


class ShardReader:
    """Random access to the documents of one shard (memory-mapped)."""

    def __init__(self, directory: str | Path, layout: VocabLayout, verify: bool = True, patches_per_image: int = 1):
        self.directory = Path(directory)
        if patches_per_image < 1:
            raise ShardError(f"patches_per_image={patches_per_image}: must be at least 1")
        self.patches_per_image = patches_per_image
        meta_path = self.directory / META_FILE
        if not meta_path.is_file():
            raise ShardError(f"{self.directory} is not a complete shard: {META_FILE} is missing")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise ShardError(f"{meta_path} is not valid JSON: {error}") from None
        stored = VocabLayout.from_dict(self.meta["vocab"])
        self.layout = layout
        self._translation = None
        if stored != layout:
            missing = [m for m, count in self.meta["tokens_per_modality"].items()
                       if count and m not in layout.modalities]
            if missing:
                raise ShardError(f"{self.directory} holds {missing} tokens, which vocabulary "
                                 f"{layout.modality_sizes} lacks")
            try:
                used = [m for m, count in self.meta["tokens_per_modality"].items() if count]
                self._translation = stored.translation_to(layout, used)
            except VocabError as error:
                raise ShardError(f"{self.directory} cannot be read with vocabulary {layout.modality_sizes}: "
                                 f"{error}") from None
        for name, expected in self.meta["sha256"].items():
            path = self.directory / name
            if not path.is_file():
                raise ShardError(f"{path} is missing")
            if verify and sha256_file(path) != expected:
                raise ShardError(f"{path} does not match the hash in {META_FILE}: the shard is corrupt "
                                 f"or was modified; prepare it again")
        self.tokens = _load_array(self.directory / "tokens.npy", mmap=True)
        self.offsets = _load_array(self.directory / "offsets.npy")
        self.continuous = self.meta.get("continuous")
        if self.continuous is not None:
            self.latents = _load_array(self.directory / "latents.npy", mmap=True)
            self.latent_offsets = _load_array(self.directory / "latent_offsets.npy")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def stream(self, index: int) -> DocumentStream:
        """Document ``index`` as a stream, its spans recovered from the markers."""
        tokens = np.asarray(self.tokens[self.offsets[index]:self.offsets[index + 1]], dtype=np.int64)
        doc_id = f"{self.directory.name}:{index}"
        if self._translation is not None:
            tokens = self._translation[tokens]  # every modality the shard uses exists (checked at open)
        latents = None
        if self.continuous is not None:
            latents = np.asarray(self.latents[self.latent_offsets[index]:self.latent_offsets[index + 1]])
            if self.patches_per_image > 1:  # one placeholder per patch
                placeholder = self.layout.id_range(self.continuous)[0]
                tokens = np.repeat(tokens, np.where(tokens == placeholder, self.patches_per_image, 1))
        return stream_from_tokens(doc_id, tokens, self.layout, latents)


def stream_from_tokens(doc_id: str, tokens: np.ndarray, layout: VocabLayout,
                       latents: np.ndarray | None = None) -> DocumentStream:
    """Recover a stream's spans from its begin/end markers."""
    spans = []
    for modality in layout.modalities[1:]:
        begin, end = layout.markers(modality)
        starts, stops = np.flatnonzero(tokens == begin), np.flatnonzero(tokens == end)
        if len(starts) != len(stops) or (stops <= starts).any():
            raise ShardError(f"document {doc_id}: unbalanced {modality} markers")
        spans.extend((int(s) + 1, int(e), modality) for s, e in zip(starts, stops))
    return DocumentStream(doc_id, tokens, tuple(sorted(spans)), latents)
