"""Files checked against their recorded size and SHA-256, and files written whole or not at all."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of one file, read in 1 MiB blocks (shards and checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: str | Path) -> Dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of the file at ``path``: how a checkpoint's
    ``complete.json`` and a saved model's ``checksums.json`` record each of their files."""
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}


def file_problem(path: str | Path, size: int, digest: str, record: str) -> Optional[str]:
    """Why the file at ``path`` is not the one that ``record`` (the file naming it) describes by
    ``size`` and SHA-256 ``digest``, or ``None`` when it is. The size is compared first: it costs
    no read and catches a truncated file."""
    path = Path(path)
    if not path.is_file():
        return f"{path} is missing"
    actual = path.stat().st_size
    if actual != size:
        return f"{path} is corrupt or truncated: it has {actual} bytes, {record} records {size}"
    if sha256_file(path) != digest:
        return f"{path} is corrupt or was changed after saving: its SHA-256 differs from the one in {record}"
    return None


def atomic_write(target: str | Path, write: Callable[[str], Any]) -> None:
    """Call ``write(temporary_path)`` beside ``target``, then rename the result onto ``target``:
    readers see the old file or the new one, never a part of it."""
    target = Path(target)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
