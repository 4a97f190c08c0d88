"""Shards: pre-tokenized document streams on disk, memory-mapped for reading.

A shard directory holds ``tokens.npy`` (int32, every document's stream one after another: unified
ids with ``<bos>``, ``<eos>`` and begin/end markers in place, so spans can be recovered from the
tokens alone), ``offsets.npy`` (int64 ``[documents + 1]``) and ``shard.json`` (counts, the
vocabulary layout and the SHA-256 of both arrays). Readers check the hashes before use, so a
shard that was truncated or altered is reported instead of read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ..tokenizers.vocab import VocabLayout
from .packing import DocumentStream

META_FILE = "shard.json"


class ShardError(RuntimeError):
    """A shard is missing, incomplete or does not match its recorded hashes."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(directory: str | Path, streams: Iterable[np.ndarray], layout: VocabLayout,
                extra: dict | None = None) -> Path:
    """Write document streams as a shard; the directory appears complete or not at all."""
    directory = Path(directory)
    if directory.exists():
        raise ShardError(f"{directory} already exists; remove it to rewrite the shard")
    arrays = [np.asarray(s, dtype=np.int64) for s in streams]
    if not arrays:
        raise ShardError(f"{directory}: no documents to write")
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
        counts = np.bincount(layout.modality_of(tokens), minlength=len(layout.modalities))
        meta = {"documents": len(arrays), "tokens": int(tokens.size),
                "tokens_per_modality": dict(zip(layout.modalities, (int(c) for c in counts))),
                "vocab": layout.to_dict(),
                "sha256": {name: _sha256(temporary / name) for name in ("tokens.npy", "offsets.npy")},
                **(extra or {})}
        (temporary / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(temporary, directory)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
    return directory


class ShardReader:
    """Random access to the documents of one shard (memory-mapped)."""

    def __init__(self, directory: str | Path, layout: VocabLayout, verify: bool = True):
        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        if not meta_path.is_file():
            raise ShardError(f"{self.directory} is not a complete shard: {META_FILE} is missing")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise ShardError(f"{meta_path} is not valid JSON: {error}") from None
        stored = VocabLayout.from_dict(self.meta["vocab"])
        if stored != layout:
            raise ShardError(f"{self.directory} was tokenized with vocabulary {stored.modality_sizes}, "
                             f"expected {layout.modality_sizes}")
        self.layout = layout
        for name, expected in self.meta["sha256"].items():
            path = self.directory / name
            if not path.is_file():
                raise ShardError(f"{path} is missing")
            if verify and _sha256(path) != expected:
                raise ShardError(f"{path} does not match the hash in {META_FILE}: the shard is corrupt "
                                 f"or was modified; prepare it again")
        self.tokens = np.load(self.directory / "tokens.npy", mmap_mode="r")
        self.offsets = np.load(self.directory / "offsets.npy")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def stream(self, index: int) -> DocumentStream:
        """Document ``index`` as a stream, its spans recovered from the markers."""
        tokens = np.asarray(self.tokens[self.offsets[index]:self.offsets[index + 1]], dtype=np.int64)
        return stream_from_tokens(f"{self.directory.name}:{index}", tokens, self.layout)


def stream_from_tokens(doc_id: str, tokens: np.ndarray, layout: VocabLayout) -> DocumentStream:
    """Recover a stream's spans from its begin/end markers."""
    spans = []
    for modality in layout.modalities[1:]:
        begin, end = layout.markers(modality)
        starts, stops = np.flatnonzero(tokens == begin), np.flatnonzero(tokens == end)
        if len(starts) != len(stops) or (stops <= starts).any():
            raise ShardError(f"document {doc_id}: unbalanced {modality} markers")
        spans.extend((int(s) + 1, int(e), modality) for s, e in zip(starts, stops))
    return DocumentStream(doc_id, tokens, tuple(sorted(spans)))
