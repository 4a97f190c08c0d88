"""mot models out as Hugging Face directories, and back.

:func:`export_hf` writes the most standard directory a model allows:

* a model that is a Llama (one tower, pre-norm, RMSNorm, no QK-norm, no MoE, no latent path) as a
  plain Llama directory, which ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` loads as
  ``LlamaForCausalLM``, no mot needed;
* any other model with the MoT class of :mod:`mot.interop.hf_model`: ``config.json`` (model type
  ``mot``, with an ``auto_map``), ``model.safetensors``, and the class's code as
  ``modeling_mot.py`` and ``configuration_mot.py``, so that
  ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` loads it. That code
  imports mot: mot must be installed where the directory is loaded.

Both also get ``checksums.json`` (see :mod:`mot.io.weights`), which :func:`import_hf` checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import torch

from ..config import ConfigError, ModelConfig
from ..io import CheckpointError, atomic_write
from ..io.weights import (CHECKSUMS_FILE, CONFIG_FILE, WEIGHTS_FILE, load_weights_into, read_weights,
                          verify_checksums, write_checksums)
from ..model.transformer import MoTModel, build_model
from ..tokenizers.vocab import VocabLayout
from . import hf_model
from .llama import INDEX_FILE, PICKLE_SUFFIXES, llama_to_mot, mot_to_llama, no_safetensors_error, not_llama_reasons

MODELING_FILE = "modeling_mot.py"
CONFIGURATION_FILE = "configuration_mot.py"
AUTO_MAP = {"AutoConfig": "configuration_mot.MoTHFConfig", "AutoModelForCausalLM": "modeling_mot.MoTForCausalLM"}
#: the prefix of the weights' names in the MoT class's state dict (``MoTForCausalLM.model``)
PREFIX = "model."
_CONFIGURATION_SOURCE = '''"""The config class of this mot model; it lives in modeling_mot.py (mot.interop.hf_model)."""

from .modeling_mot import MoTHFConfig

__all__ = ["MoTHFConfig"]
'''


def export_hf(model: MoTModel, out: str | Path, layout: Optional[VocabLayout] = None) -> Path:
    """Write ``model`` to the new directory ``out`` for transformers (see the module docstring); returns ``out``.

    ``layout``, the vocabulary the model was trained with, is stored in ``config.json``: a MoT class
    model derives its ``modality_ids`` from the token ids with it (a Llama needs none). So is the
    mot config (key ``mot``), from which :func:`import_hf` rebuilds the very model. ``out`` must
    not hold a model already: nothing is overwritten."""
    out = Path(out)
    _refuse_existing_model(out)
    if layout is not None:
        layout.check_model(model.config)
    out.mkdir(parents=True, exist_ok=True)
    if not_llama_reasons(model):
        _write_code(out)
        state = {PREFIX + name: tensor for name, tensor in model.state_dict().items()}
        _write(out, state, _mot_config(model, layout).to_json_string())
    else:
        hf_config, state = mot_to_llama(model)
        if layout is not None:  # for mot's tools: transformers keeps the key and ignores it
            hf_config.modality_sizes = dict(layout.modality_sizes)
        _write(out, state, hf_config.to_json_string())
    return out


def _refuse_existing_model(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; export to a directory")
    held = [name for name in (CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE) if (out / name).exists()]
    held += sorted(path.name for path in out.glob("*") if path.suffix in PICKLE_SUFFIXES)
    if held:
        raise ConfigError(f"{out} already holds a model ({', '.join(held)}); export to another directory")


def _mot_config(model: MoTModel, layout: Optional[VocabLayout]) -> hf_model.MoTHFConfig:
    return hf_model.MoTHFConfig(
        mot=model.config.to_dict(), modality_sizes=dict(layout.modality_sizes) if layout is not None else None,
        auto_map=dict(AUTO_MAP), architectures=["MoTForCausalLM"],
        dtype=str(model.embed.weight.dtype).removeprefix("torch."))


def _write_code(out: Path) -> None:
    """The MoT class's code, for trust_remote_code: this mot's ``hf_model.py`` as it is, and the config's module."""
    source = Path(hf_model.__file__).read_text()
    atomic_write(out / MODELING_FILE, lambda path: Path(path).write_text(source))
    atomic_write(out / CONFIGURATION_FILE, lambda path: Path(path).write_text(_CONFIGURATION_SOURCE))


def _write(out: Path, state: Dict[str, torch.Tensor], config_json: str) -> None:
    """Weights, then the config, then the checksums (last: their presence marks a finished export)."""
    from safetensors.torch import save_file

    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}
    atomic_write(out / WEIGHTS_FILE, lambda path: save_file(tensors, str(path), metadata={"format": "pt"}))
    atomic_write(out / CONFIG_FILE, lambda path: Path(path).write_text(config_json))
    write_checksums(out)


def import_hf(directory: str | Path, *, verify: bool = True) -> MoTModel:
    """The mot model of a Hugging Face directory: a Llama-family one (:func:`~mot.interop.llama.llama_to_mot`)
    or one of the MoT class (what :func:`export_hf` wrote: the exported weights, exactly).

    Pickled weights are refused, never read. With ``verify`` and a ``checksums.json`` (mot wrote the
    directory), ``model.safetensors`` must match it; every failure names the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory")
    if not (directory / WEIGHTS_FILE).is_file() and not (directory / INDEX_FILE).is_file():
        raise no_safetensors_error(directory)
    saved = _read_json(directory / CONFIG_FILE)
    verify = verify and (directory / CHECKSUMS_FILE).is_file()
    config = _mot_config_of(saved, directory / CONFIG_FILE)
    if saved.get("model_type") != hf_model.MODEL_TYPE:
        if verify:
            verify_checksums(directory, f"import_hf('{directory}', verify=False)")
        return llama_to_mot(directory, config)
    if config is None:
        raise CheckpointError(f"{directory / CONFIG_FILE} has model_type {hf_model.MODEL_TYPE!r} but no 'mot' key")
    return _import_mot(directory, config, verify)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: not a Hugging Face model directory")
    try:
        saved = json.loads(path.read_text())
    except ValueError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} holds a {type(saved).__name__}, not a JSON object")
    return saved


def _mot_config_of(saved: dict, path: Path) -> Optional[ModelConfig]:
    """The mot config that :func:`export_hf` stored under the key ``mot``; ``None`` in a directory made elsewhere."""
    if "mot" not in saved:
        return None
    try:
        return ModelConfig(**saved["mot"])
    except (TypeError, ConfigError) as error:
        raise CheckpointError(f"{path}: 'mot' does not hold a valid mot model config ({error})") from None


def _import_mot(directory: Path, config: ModelConfig, verify: bool) -> MoTModel:
    """A directory of the MoT class as the MoTModel it holds."""
    state = read_weights(directory, f"import_hf('{directory}', verify=False)", verify=verify)
    foreign = sorted(name for name in state if not name.startswith(PREFIX))
    if foreign:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} has tensors outside {PREFIX!r}: {', '.join(foreign[:5])}")
    model = build_model(config, device="meta").to_empty(device="cpu")
    load_weights_into(model, {name[len(PREFIX):]: tensor for name, tensor in state.items()}, directory)
    return model
