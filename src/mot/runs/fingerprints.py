"""``fingerprints.json`` in a run directory: where two machines' runs of one recipe part.

A run that differs between two machines differs first somewhere: in the corpus (the fingerprints
of its stages, from its manifest: ``data.prepare.fingerprints``), in the initial weights (the
seed's draws), or in the first step's arithmetic (the weights after step 1). The trainer writes
all three when it starts from step 0 in one process; diffing two runs' files names the first.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict

import torch

from ..io.files import atomic_write

FINGERPRINTS_FILE = "fingerprints.json"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) of every parameter and buffer: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def write_fingerprints(run_dir: Path, record: Dict[str, object]) -> None:
    """Add ``record``'s entries to the run's ``fingerprints.json`` (whole or not at all)."""
    path = Path(run_dir) / FINGERPRINTS_FILE
    current = json.loads(path.read_text()) if path.is_file() else {}
    text = json.dumps({**current, **record}, indent=1) + "\n"
    atomic_write(path, lambda target: Path(target).write_text(text))
