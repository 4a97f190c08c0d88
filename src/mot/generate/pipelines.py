"""The pipeline of a run, chosen by the setting it was trained in."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from ..config import ConfigError
from ..runs.recipe import load_recipe
from ..runs.run_dir import CONFIG_FILE
from .chameleon import ChameleonPipeline
from .pipeline import TransfusionPipeline

Pipeline = Union[ChameleonPipeline, TransfusionPipeline]


def pipeline_for_run(run_dir: str | Path, log: Callable[[str], None] = print, step: Optional[int] = None) -> Pipeline:
    """A :class:`TransfusionPipeline` for a run of the transfusion setting, else a
    :class:`ChameleonPipeline` (chameleon and chameleon_speech), of the checkpoint of ``step``
    (default: the newest complete one)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {CONFIG_FILE} is missing")
    if load_recipe(path).data.setting == "transfusion":
        return TransfusionPipeline.from_run(run_dir, log, step)
    return ChameleonPipeline.from_run(run_dir, log, step)
