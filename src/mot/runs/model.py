"""A run's newest good checkpoint as a model, without its optimizer: loaded for analysis (:func:`load_run_model`) or
written by ``mot export RUN --out DIR`` (:func:`export_run`) in the release form (``config.json`` +
``model.safetensors``) that ``MoTModel.from_pretrained`` loads, or with ``--format hf`` as a Hugging
Face directory that ``transformers`` loads (:mod:`mot.interop.hf_export`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional, Tuple

from ..config import ConfigError
from ..data.settings import open_corpus
from ..errors import MotError
from ..io import CheckpointError
from ..model.transformer import MoTModel, build_model
from ..tokenizers.vocab import VocabLayout
from .checkpoints import CheckpointManager
from .recipe import TrainConfig, load_recipe
from .run_dir import CONFIG_FILE


def run_checkpoints(run_dir: str | Path) -> Tuple[TrainConfig, CheckpointManager]:
    """The config of ``run_dir`` and the manager of its checkpoints."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {CONFIG_FILE} is missing")
    config = load_recipe(run_dir / CONFIG_FILE)
    return config, CheckpointManager(run_dir / "checkpoints", config.keep_last)


def load_run_model(run_dir: str | Path, log=print, step: Optional[int] = None) -> Tuple[TrainConfig, MoTModel]:
    """The config of ``run_dir`` and the model of its checkpoint of ``step`` (default: the newest
    complete one), on the CPU, in eval mode.

    Checkpoints passed over for the newest (unfinished or damaged) are reported through ``log``;
    a ``step`` whose checkpoint is missing or damaged is a :class:`CheckpointError`."""
    config, checkpoints = run_checkpoints(run_dir)
    if step is not None:
        path = checkpoints.verified(step)
    else:
        path, problems = checkpoints.latest()
        for problem in problems:
            log(f"checkpoint passed over: {problem}")
        if path is None:
            raise CheckpointError(f"{Path(run_dir) / 'checkpoints'} holds no complete checkpoint")
    model: MoTModel = build_model(config.model)
    checkpoints.load_model(path, model)  # the model's tensors only: no optimizer is built or read
    log(f"loaded {path}")
    return config, model.eval()


#: ``mot``: mot's release form; ``hf``: a Hugging Face directory
EXPORT_FORMATS = ("mot", "hf")


def export_run(run_dir: str | Path, out: str | Path, log=print, format: str = "mot") -> Path:
    """Write the model of ``run_dir``'s newest complete checkpoint to ``out`` in ``format`` (one of
    :data:`EXPORT_FORMATS`); returns ``out``. ``hf`` stores the vocabulary layout of the run's
    corpus, when the corpus can be read, so that the exported model derives modality ids from
    token ids.

    ``out`` must not hold a model already (nothing is overwritten)."""
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"format={format!r}: must be one of {list(EXPORT_FORMATS)}")
    if format == "hf" and importlib.util.find_spec("transformers") is None:
        raise ConfigError("format='hf' needs the transformers package: pip install transformers")
    out = Path(out)
    if (out / "model.safetensors").exists() or (out / "config.json").exists():
        raise ConfigError(f"{out} already holds a model; export to another directory")
    config, model = load_run_model(run_dir, log)
    if format == "hf":
        from ..interop.hf_export import export_hf  # here: transformers is imported only when asked for

        layout = run_layout(config, log, "no vocabulary layout stored: the exported model will need modality_ids "
                                         "with every input")
        export_hf(model, out, layout=layout)
    else:
        model.save_pretrained(out)
    log(f"exported to {out}")
    return out


def run_layout(config: TrainConfig, log, without: str) -> Optional[VocabLayout]:
    """The vocabulary layout of the run's corpus and setting; ``None`` when the corpus cannot be read,
    logged with what that means (``without``)."""
    try:
        return open_corpus(config.data.corpus).layout(config.data.setting)
    except MotError as error:
        log(f"note: the corpus of the run cannot be read ({error}); {without}")
        return None
