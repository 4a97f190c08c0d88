"""Warm starts: a new run's weights copied from a model that exists (``init:`` in a recipe).

Three kinds of source, told apart by what the directory holds:

* a **mot run directory** (``config.yaml``): its newest complete checkpoint, or ``init.step``'s;
  its vocabulary is its corpus's, so a run on a corpus with a new modality maps every old token to
  its new id;
* a **mot model directory** (``config.json`` + ``model.safetensors``, from ``mot export`` or
  ``save_pretrained``; ``--format hf`` directories of mot models too): its vocabulary must be the
  new model's, or carry its layout (the ``hf`` format does), since a bare model does not say which
  ids are which modality's;
* a **Hugging Face Llama-family directory** (``config.json`` with a ``model_type`` + safetensors):
  read offline into a dense text tower. Its token ids are the text ids of the new vocabulary, so the
  corpus's text tokenizer must have exactly the Llama's vocabulary size (a different size is a
  vocabulary clash, refused); mot's specials and the other modalities' codes are new rows.

Pickled weights (``pytorch_model.bin``, ``.pt``) are refused and never unpickled. How towers and
rows are copied is :mod:`mot.interop.towers`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from ..config import ConfigError, ModelConfig
from ..interop.towers import target_rows, warm_state
from ..io import CheckpointError
from ..tokenizers.vocab import VocabError, VocabLayout
from .model import load_run_model, run_layout
from .recipe import InitConfig
from .run_dir import CONFIG_FILE


@dataclass
class SourceModel:
    """A warm start's source: its architecture, its weights (mot names) and how its token ids map."""

    description: str
    config: ModelConfig
    state: Dict[str, torch.Tensor]
    #: the source's vocabulary layout; ``None`` for a Llama or a bare model directory
    layout: Optional[VocabLayout]
    #: the source's ids are the text ids of the new vocabulary (a Llama)
    text_ids: bool = False

    def translation(self, target: ModelConfig, layout: VocabLayout) -> torch.Tensor:
        """``[source vocab]`` int64: each source id's id in ``layout`` (-1: the target lacks it)."""
        if self.layout is not None:
            try:
                return torch.from_numpy(self.layout.translation_to(layout))
            except VocabError as error:
                raise ConfigError(f"vocabulary clash between {self.description} and this corpus: {error}") from None
        if self.text_ids:
            start, stop = layout.id_range(layout.modalities[0])
            if stop - start != self.config.vocab_size:
                raise ConfigError(f"vocabulary clash: {self.description} has {self.config.vocab_size} token ids, but "
                                  f"this corpus's {layout.modalities[0]} tokenizer has {stop - start}; prepare the "
                                  f"corpus with the Llama's tokenizer")
            return torch.arange(start, stop)
        if self.config.vocab_size != target.vocab_size or self.config.modalities != target.modalities:
            raise ConfigError(f"{self.description} has vocab_size={self.config.vocab_size} and modalities "
                              f"{self.config.modalities}, this model {target.vocab_size} and {target.modalities}; a "
                              f"model directory does not say which ids are whose, so start from its run directory")
        return torch.arange(self.config.vocab_size)


def read_source(init: InitConfig, log: Callable[[str], None] = print) -> SourceModel:
    """The model that ``init.source`` names (see the module docstring); errors name the directory."""
    path = Path(init.source)
    if not path.is_dir():
        raise ConfigError(f"init.source={init.source!r}: no such directory")
    if (path / CONFIG_FILE).is_file():
        return _run_source(path, init.step, log)
    if init.step is not None:
        raise ConfigError(f"init.step={init.step}: {path} is a model directory, not a run with checkpoints")
    config_json = path / "config.json"
    if not config_json.is_file():
        raise ConfigError(f"init.source={init.source!r}: neither a run directory ({CONFIG_FILE}) nor a model "
                          f"directory (config.json)")
    try:
        saved = json.loads(config_json.read_text())
        model_type = saved.get("model_type")
    except (ValueError, AttributeError) as error:
        raise CheckpointError(f"{config_json} is not a JSON object: {error}") from None
    if model_type is None:
        from ..model.transformer import MoTModel

        model = MoTModel.from_pretrained(path)
        return SourceModel(f"the model in {path}", model.config, model.state_dict(), None)
    if "mot" in saved:  # written by `mot export --format hf`: mot's config and vocabulary come with it
        from ..interop.hf_export import import_hf
        from ..interop.hf_model import stored_layout

        model = import_hf(path)
        return SourceModel(f"the model in {path}", model.config, model.state_dict(),
                           stored_layout(saved.get("modality_sizes"), model.config))
    return _llama_source(path)


def _run_source(path: Path, step: Optional[int], log: Callable[[str], None]) -> SourceModel:
    run_config, model = load_run_model(path, log, step)  # the run's model only: no optimizer
    layout = run_layout(run_config, log, "its vocabulary must then be this model's")
    return SourceModel(f"the run {path}", model.config, model.state_dict(), layout)


def _llama_source(path: Path) -> SourceModel:
    from ..interop.llama import llama_model_fields, llama_to_tower_state, read_llama

    hf_config, llama_state = read_llama(path)
    config = ModelConfig(**llama_model_fields(hf_config), vocab_size=hf_config.vocab_size, modalities=["text"])
    state = llama_to_tower_state(hf_config, llama_state, group="text")
    return SourceModel(f"the Llama in {path}", config, state, None, text_ids=True)


def warm_start(model: torch.nn.Module, init: InitConfig, layout: VocabLayout,
               log: Callable[[str], None] = print) -> SourceModel:
    """Copy ``init.source``'s weights into ``model`` (in place; see :mod:`mot.interop.towers`) for the
    vocabulary ``layout``; returns the source."""
    if model.config.vocab_size != layout.vocab_size:
        raise ConfigError(f"the model has vocab_size={model.config.vocab_size} but the vocabulary it is for has "
                          f"{layout.vocab_size} ids")
    source = read_source(init, log)
    rows = target_rows(source.translation(model.config, layout), model.config.vocab_size)
    state = warm_state(model, source.config, source.state, rows, init.towers)
    model.load_state_dict(state, strict=True)
    new = int((rows < 0).sum())
    log(f"warm start from {source.description}" + (f" ({new} new token rows: the mean of its rows)" if new else ""))
    return source

