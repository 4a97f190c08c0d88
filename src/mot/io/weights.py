"""The release format of a model (MoT models and image tokenizers alike): ``config.json`` + ``model.safetensors`` (as Hugging Face models ship), and
``checksums.json``, the size and SHA-256 of the weights, which loading checks.

Tensor names are the module paths, so per-tower weights read as their tower:
``blocks.3.attention.qkv.towers.image.weight``, ``blocks.3.ffn.towers.text.down.weight``.

The checksums live in a sidecar written last and atomically, like a training checkpoint's
``complete.json``, rather than in the safetensors header: a hash of the whole file covers the
header too, it is computed by the same ``sha256_file`` as checkpoints and shards, and
``model.safetensors`` stays a file that any safetensors reader opens. A save that stops early
leaves either the previous files, which still match the previous checksums, or new weights that
do not match them, which loading reports; never weights that load unchecked.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import MotError
from .files import atomic_write, file_entry, file_problem

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKSUMS_FILE = "checksums.json"
CHECKSUMS_FORMAT = 1


class CheckpointError(MotError, RuntimeError):
    """A saved model is missing, corrupt, or does not fit the architecture it claims."""


def save_pretrained(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write ``config.json`` (``model.config.to_dict()``), ``model.safetensors`` and, last,
    ``checksums.json`` into ``directory``; each file appears whole or not at all."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda path: save_file(state, str(path), metadata={"format": "pt"}))
    config_text = json.dumps(model.config.to_dict(), indent=2) + "\n"
    atomic_write(directory / CONFIG_FILE, lambda path: Path(path).write_text(config_text))
    write_checksums(directory)
    return directory


def write_checksums(directory: str | Path, names: tuple = (WEIGHTS_FILE,)) -> None:
    """Record the size and SHA-256 of each of ``names`` in ``directory/checksums.json``, atomically.

    The content depends on the files' bytes alone (sorted keys, no time), so a directory's
    fingerprint (``mot.tokenizers.fingerprint``) still depends on its config and weights alone."""
    directory = Path(directory)
    files = {name: file_entry(directory / name) for name in names}
    text = json.dumps({"format": CHECKSUMS_FORMAT, "files": files}, indent=1, sort_keys=True) + "\n"
    atomic_write(directory / CHECKSUMS_FILE, lambda path: Path(path).write_text(text))


def verify_checksums(directory: str | Path, opt_out: str, names: tuple = (WEIGHTS_FILE,)) -> None:
    """Raise :class:`CheckpointError`, naming the file, unless each of ``names`` has the size and
    SHA-256 that ``checksums.json`` records. ``opt_out`` is the call that loads without this check
    (quoted in the message, for weights edited on purpose or saved before checksums existed)."""
    directory = Path(directory)
    record = directory / CHECKSUMS_FILE
    trusted = f"if you trust the weights, load them with {opt_out} and save them again to record checksums"
    if not record.is_file():
        raise CheckpointError(f"{record} does not exist, so {directory / names[0]} cannot be checked for damage "
                              f"(saved before mot recorded checksums, or the save did not finish); {trusted}")
    try:
        info = json.loads(record.read_text())
        expected = {name: (int(info["files"][name]["bytes"]), str(info["files"][name]["sha256"])) for name in names}
        version = info["format"]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{record} is unreadable ({type(error).__name__}: {error}); {trusted}") from None
    if version != CHECKSUMS_FORMAT:
        raise CheckpointError(f"{record} has format {version!r}; this version of mot reads format {CHECKSUMS_FORMAT}")
    repair = f"restore it from a good copy or save it again; to load weights edited on purpose, use {opt_out}"
    for name, (size, digest) in expected.items():
        problem = file_problem(directory / name, size, digest, CHECKSUMS_FILE)
        if problem is not None:
            raise CheckpointError(f"{problem}; {repair}")


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


def read_weights(directory: str | Path, opt_out: str, *, verify: bool = True,
                 device: torch.device | str = "cpu") -> dict:
    """The tensors of ``directory/model.safetensors``, checked against ``checksums.json`` first
    when ``verify`` (see :func:`verify_checksums`); every failure is a :class:`CheckpointError`
    naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} does not exist")
    if verify:
        verify_checksums(directory, opt_out)
    try:
        return load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights} is corrupt or truncated: {error}") from None


def load_weights_into(model: torch.nn.Module, state: dict, directory: str | Path) -> None:
    """Load ``state`` (read from ``directory``) into ``model``, every tensor required to fit;
    :class:`CheckpointError` names the tensors that do not."""
    problems = state_mismatch(model, state)
    if problems:
        raise CheckpointError(f"{Path(directory) / WEIGHTS_FILE} does not match the architecture in "
                              f"{Path(directory) / CONFIG_FILE}; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
