"""The JSON records of a prepared corpus: the config it was prepared with, each shard's entry in
the manifest, and the writing of records whole or not at all."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from ...tokenizers.fingerprint import fingerprint
from .config import PrepareConfig, PrepareError

MANIFEST = "manifest.json"
CONFIG_RECORD = "prepare_config.json"


def write_json(path: Path, data: dict) -> None:
    """Write JSON whole or not at all (temporary file, then rename)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


def check_same_config(out: Path, config: PrepareConfig) -> None:
    """Refuse to mix artefacts of two configs in one directory (resuming needs the same one).

    A field the record lacks was added by a later version of mot (``vocoder_steps``); its stage
    had not run, so it runs now and the record gains the field."""
    record = out / CONFIG_RECORD
    wanted = asdict(config)
    if record.is_file():
        existing = json.loads(record.read_text())
        changed = sorted(k for k in existing.keys() | wanted.keys() if k in existing and existing.get(k) != wanted.get(k))
        if changed:
            raise PrepareError(f"{out} holds a corpus prepared with another config (differs in {changed}); "
                               f"use another out_dir or delete {out}")
        if existing.keys() == wanted.keys():
            return
    write_json(record, wanted)


def shard_entry(directory: Path, kind: str) -> dict:
    """The manifest's entry for the shard in ``directory``: its ``kind`` (``tokens`` or
    ``latents``), the counts its ``shard.json`` records and the fingerprint of its files."""
    meta = json.loads((directory / "shard.json").read_text())
    return {"kind": kind, **{k: meta[k] for k in ("source", "split", "documents", "tokens", "tokens_per_modality")},
            "fingerprint": fingerprint(directory)}
