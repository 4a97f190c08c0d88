"""Content hashes that identify a trained, frozen tokenizer (or any saved artefact)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def fingerprint(directory: str | Path) -> str:
    """SHA-256 (first 16 hex digits) over every file under ``directory``: names and bytes, in
    sorted order, so the same saved tokenizer always gives the same fingerprint."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
