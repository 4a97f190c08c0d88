"""How a trained tokenizer network is kept (the image VQ and VAE, the speech unit vocoder):
``config.json`` with its ``kind`` + ``model.safetensors`` + ``checksums.json`` (the release format of
:mod:`mot.io.weights`), loaded with every failure named, and fingerprinted by content."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Type, TypeVar

from torch import nn

from ..config import ConfigError
from ..io.weights import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, load_weights_into, read_weights, save_pretrained
from .fingerprint import fingerprint


# ----------------------------------------------------------------------------------- config --

C = TypeVar("C")


def config_to_dict(config: Any, kind: str) -> dict[str, Any]:
    """The ``config.json`` content: the fields plus ``kind``, so one tokenizer type is never
    loaded as another."""
    fields = dataclasses.asdict(config)
    return {"kind": kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}


def config_from_dict(cls: Type[C], data: Any, kind: str) -> C:
    """Inverse of :func:`config_to_dict`; ``ConfigError`` names an unknown key or a wrong kind."""
    if not isinstance(data, dict):
        raise ConfigError(f"a {kind} config must be a JSON object, not {type(data).__name__}")
    data = dict(data)
    found = data.pop("kind", None)
    if found != kind:
        raise ConfigError(f"kind={found!r}: expected {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {kind} config key(s) {unknown}; known: {sorted(names)}")
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**data)


# ------------------------------------------------------------------------------- save, load --

def save_tokenizer(model: nn.Module, directory: str | Path) -> Path:
    """``config.json`` + ``model.safetensors`` + ``checksums.json`` (see :mod:`mot.io.weights`),
    each written whole or not at all."""
    return save_pretrained(model, directory)


def load_tokenizer(model_cls: Type[nn.Module], config_cls: type, kind: str, directory: str | Path,
                   verify: bool = True) -> nn.Module:
    """Read a directory written by :func:`save_tokenizer`. Every failure is a
    :class:`~mot.io.CheckpointError` that names the file and what is wrong with it; with
    ``verify`` the weights must match ``checksums.json`` (``verify=False`` skips that check)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory: no saved {kind} tokenizer there")
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist: {directory} is not a complete saved "
                                  f"{kind} tokenizer")
    try:
        config = config_from_dict(config_cls, json.loads(config_path.read_text()), kind)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from None
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{config_path}: {error}") from None
    state = read_weights(directory, f"{model_cls.__name__}.load('{directory}', verify=False)", verify=verify)
    model = model_cls(config)
    load_weights_into(model, state, directory)
    return model.eval()


class SavedTokenizer:
    """``save`` / ``load`` / ``fingerprint`` for a tokenizer module whose class names its
    ``kind`` and ``config_class``."""

    kind: ClassVar[str]
    config_class: ClassVar[type]

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` + ``checksums.json`` into ``directory``."""
        return save_tokenizer(self, directory)

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True):
        """Read a saved tokenizer; raises ``CheckpointError`` naming the missing, corrupt or
        mismatched file. ``verify=False`` loads weights that do not match their recorded
        checksums (edited on purpose, or saved before mot recorded them)."""
        return load_tokenizer(cls, cls.config_class, cls.kind, directory, verify)

    def fingerprint(self) -> str:
        """Content hash of this tokenizer as saved (config and weights): two tokenizers that
        encode alike share it."""
        # it hashes checksums.json too: a function of the weights' bytes, so it changes no
        # fingerprint's meaning and keeps this equal to ``fingerprint(directory)`` of a saved copy
        with tempfile.TemporaryDirectory() as directory:
            self.save(directory)
            return fingerprint(directory)
