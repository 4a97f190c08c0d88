"""Content fingerprints of every stage of a prepared corpus, for finding where two machines'
corpora part: the documents of each source (before any tokenizer), the tokenizers (their own
fingerprints), every shard (its files). Equal fingerprints at a stage and different ones at the
next place the difference in that next stage's computation; different documents place it in a
source (a generator, a Debian package's version).

A fingerprint is the first 16 hex digits of a SHA-256, as the tokenizers' are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Iterable, List

from ..documents import Document, ImageSegment, SpeechSegment, TextSegment
from .gathering import Source


def _update_segment(digest, segment) -> None:
    if isinstance(segment, TextSegment):
        digest.update(b"t" + segment.text.encode())
    elif isinstance(segment, ImageSegment) and segment.array is not None:
        digest.update(b"a" + repr(segment.array.shape).encode() + segment.array.tobytes())
    elif isinstance(segment, (ImageSegment, SpeechSegment)):  # a file: its bytes, wherever it lies
        digest.update(b"f" + Path(segment.path).read_bytes())
    digest.update(b"\0")


def documents_fingerprint(documents: Iterable) -> str:
    """A hash of documents in order: ids, texts, pixels and the bytes of the files they name
    (``Document``s), or the strings of a text source."""
    digest = hashlib.sha256()
    for document in documents:
        if isinstance(document, Document):
            digest.update(document.id.encode() + b"\0")
            for segment in document.segments:
                _update_segment(digest, segment)
        else:
            digest.update(str(document).encode() + b"\0")
        digest.update(b"\1")
    return digest.hexdigest()[:16]


def source_fingerprints(sources: List[Source], speech_documents: Dict[str, list]) -> Dict[str, dict]:
    """``{source: {split: fingerprint}}`` of the documents of every split (the synthesized speech
    under ``speech``)."""
    found: Dict[str, dict] = {}
    for source in sources:  # a source may come as two (ShapeScenes' held-out scenes are their own)
        found.setdefault(source.name, {}).update({split: documents_fingerprint(source.chosen(split))
                                                  for split in source.splits})
    if speech_documents:
        found["speech"] = {split: documents_fingerprint(documents) for split, documents in speech_documents.items()}
    return found


def stage_fingerprints(manifest: dict) -> Dict[str, Dict[str, str]]:
    """``{stage: {name: fingerprint}}`` of a manifest, in the order the stages run."""
    documents = {f"{source}/{split}": value for source, by in manifest.get("documents", {}).items()
                 for split, value in by.items()}
    return {"documents": documents,
            **{stage: {name: entry["fingerprint"] for name, entry in manifest.get(stage, {}).items()
                       if isinstance(entry, dict) and "fingerprint" in entry}
               for stage in ("tokenizers", "shards")}}


def differences(first: dict, second: dict) -> List[str]:
    """Where two manifests' fingerprints differ, stage by stage (documents, tokenizers, shards), as
    ``stage name: a != b`` lines; empty when every fingerprint both hold agrees (a corpus prepared
    before a stage had fingerprints holds none for it)."""
    a, b = stage_fingerprints(first), stage_fingerprints(second)
    return [f"{stage} {name}: {a[stage][name]} != {b[stage][name]}"
            for stage in a for name in a[stage] if name in b[stage] and a[stage][name] != b[stage][name]]
