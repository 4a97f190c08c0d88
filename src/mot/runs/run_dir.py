"""The run directory: the resolved config, the environment, metrics and checkpoints of one run.

::

    runs/<name>/
      config.yaml       the resolved recipe (what ``mot train --config`` reads back)
      environment.json  versions, git revision, devices, world size
      metrics.jsonl     one JSON object per logging interval and per evaluation
      tensorboard/      TensorBoard events
      checkpoints/      step-00000100/ ... (see ``checkpoint.py``)

Starting a run in a directory that holds another run's config is refused (naming the fields that
differ), so nothing is overwritten by mistake; the loop's cadence (``steps``, intervals,
``keep_last``, ``keep_every``) and ``compile`` / ``activation_checkpointing`` may change between a run and its
resumption.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import yaml

from ..config import ConfigError
from ..errors import first_line
from ..io import YamlError, read_yaml
from .recipe import TrainConfig

CONFIG_FILE = "config.yaml"
ENVIRONMENT_FILE = "environment.json"
METRICS_FILE = "metrics.jsonl"
#: fields that may differ between a run and its resumption: the loop's cadence, and how (not what)
#: it computes
RESUMABLE_CHANGES = ("steps", "log_every", "eval_every", "checkpoint_every", "keep_last", "keep_every", "device",
                     "data.valid_batches", "data.valid_splits", "compile", "activation_checkpointing")


def _flatten(data: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and key not in ("towers", "weights", "tokenizers"):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """Dotted names of the fields in which two resolved configs differ, ignoring ``RESUMABLE_CHANGES``."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES)


def _resolved(config: TrainConfig) -> Dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # tuples become lists, so it reads back


def check_run_dir(config: TrainConfig) -> None:
    """Raise if the run directory holds a run with another config; writes nothing."""
    path = config.run_dir / CONFIG_FILE
    if path.is_file():
        differences = config_differences(_read_run_config(path), _resolved(config))
        if differences:
            raise ConfigError(f"{config.run_dir} holds a run with another config (differs in {differences}); "
                              f"choose another name= or delete {config.run_dir}")


def _read_run_config(path: Path) -> Dict[str, Any]:
    """The mapping in a run's ``config.yaml``; damage is a :class:`ConfigError`, since nothing may
    be written over a run whose config cannot be compared."""
    try:
        data = read_yaml(path)
    except YamlError as error:
        raise ConfigError(f"{path} is damaged ({first_line(error)}); fix it, or delete the run directory") from None
    if not isinstance(data, dict):  # empty too: the file is replaced whole, never written in place
        what = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
        raise ConfigError(f"{path} is damaged ({what}); fix it, or delete the run directory")
    return data


def prepare_run_dir(config: TrainConfig) -> Path:
    """Create (or reopen) the run directory and write ``config.yaml``."""
    check_run_dir(config)
    run_dir = config.run_dir
    resolved = _resolved(config)
    path = run_dir / CONFIG_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(resolved, sort_keys=False))
    os.replace(temporary, path)
    return run_dir


def environment_facts(world_size: int, device: str) -> Dict[str, Any]:
    """What a reader of the results needs to know about where they came from."""
    import numpy
    import torch

    facts = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
             "platform": platform.platform(), "host": socket.gethostname(), "cpu_count": os.cpu_count(),
             "torch_threads": torch.get_num_threads(), "world_size": world_size, "device": device,
             "git_revision": _git_revision()}
    if torch.cuda.is_available():
        facts["cuda"] = torch.version.cuda
        facts["gpu"] = torch.cuda.get_device_name()
    return facts


def _git_revision() -> str | None:
    """The checkout's revision (with ``+dirty`` when it has uncommitted changes), if it is one."""
    here = Path(__file__).resolve().parent
    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return revision + ("+dirty" if dirty else "")


def write_environment(run_dir: Path, facts: Dict[str, Any]) -> None:
    (run_dir / ENVIRONMENT_FILE).write_text(json.dumps(facts, indent=2) + "\n")


def read_environment(run_dir: Path) -> Dict[str, Any]:
    """The facts :func:`write_environment` wrote (absent: ``{}``). A damaged file reads as
    ``{"damaged": why}`` rather than an error: it only describes the machine, and a report's
    numbers do not need it."""
    path = Path(run_dir) / ENVIRONMENT_FILE
    if not path.is_file():
        return {}
    try:
        facts = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:  # bad JSON or bad UTF-8 (a ValueError too)
        return {"damaged": f"{path}: {error}"}
    return facts if isinstance(facts, dict) else {"damaged": f"{path}: not a JSON object"}
