"""Release format: ``config.json`` + ``model.safetensors`` (as Hugging Face models ship).

Tensor names are the module paths, so per-tower weights read as their tower:
``blocks.3.attention.qkv.towers.image.weight``, ``blocks.3.ffn.towers.text.down.weight``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from ..config import ConfigError, ModelConfig, load_config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(RuntimeError):
    """A saved model is missing, corrupt, or does not fit the architecture it claims."""


def save_pretrained(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory``; each file appears whole or not at all."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    _atomic_write(directory / WEIGHTS_FILE, lambda path: save_file(state, str(path), metadata={"format": "pt"}))
    config_text = json.dumps(model.config.to_dict(), indent=2) + "\n"
    _atomic_write(directory / CONFIG_FILE, lambda path: Path(path).write_text(config_text))
    return directory


def _atomic_write(target: Path, write) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def state_mismatch(model: torch.nn.Module, state: dict) -> list:
    """What keeps ``state`` from loading into ``model`` (missing, unexpected, wrongly shaped
    tensors, a few of each named); empty when it fits."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{n} {tuple(state[n].shape)} (expected {expected[n]})"
             for n in sorted(set(expected) & set(state)) if tuple(state[n].shape) != expected[n]]
    return [f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]


def load_model_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: not a saved mot model directory")
    try:
        return load_config(ModelConfig, path)
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from None


def from_pretrained(directory: str | Path, device: torch.device | str = "cpu"):
    """Load a model written by :func:`save_pretrained`; every tensor must match the config's architecture."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .transformer import build_model

    config = load_model_config(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} does not exist")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights} is corrupt or truncated: {error}") from None
    model = build_model(config, device="meta")
    problems = state_mismatch(model, state)
    if problems:
        raise CheckpointError(f"{weights} does not match the architecture in {CONFIG_FILE}; " + "; ".join(problems))
    model = model.to_empty(device=device)
    model.load_state_dict(state, strict=True)
    return model
