"""A run's newest good checkpoint as a model, without its optimizer: loaded for analysis (:func:`load_run_model`) or
written by ``mot export RUN --out DIR`` in the release form (``config.json`` + ``model.safetensors``)
that ``MoTModel.from_pretrained`` loads (:func:`export_run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from ..config import ConfigError
from ..io import CheckpointError
from ..model.transformer import MoTModel, build_model
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


def export_run(run_dir: str | Path, out: str | Path, log=print) -> Path:
    """Write the model of ``run_dir``'s newest complete checkpoint to ``out``; returns ``out``.

    ``out`` must not hold a model already (nothing is overwritten)."""
    out = Path(out)
    if (out / "model.safetensors").exists() or (out / "config.json").exists():
        raise ConfigError(f"{out} already holds a model; export to another directory")
    _, model = load_run_model(run_dir, log)
    model.save_pretrained(out)
    log(f"exported to {out}")
    return out
