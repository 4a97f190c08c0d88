"""Metrics of a run: ``metrics.jsonl``, TensorBoard events, and what the console shows.

Only rank 0 writes. Every record is one JSON object with a ``step`` and a ``kind`` (``train`` or
``valid``); train records carry the loss per modality over the interval, the grad norm, the
learning rate, tokens/s per modality and, on a GPU, MFU and peak memory. When a run resumes, the
records after the checkpoint's step are dropped, so the file describes one unbroken run.

A run killed in the middle of a write leaves a partial last line: readers drop it (and say so
where they have a log). A bad line anywhere else is damage, an error naming the file and line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import MotError
from .run_dir import METRICS_FILE


class MetricsError(MotError, ValueError):
    """A line of ``metrics.jsonl`` other than the last is not a record; the message names it."""


def read_metrics(run_dir: str | Path, log: Optional[Callable[[str], None]] = None) -> list:
    """Every record of a run's ``metrics.jsonl`` (an absent file reads as none); a partial last
    line is dropped and reported through ``log``."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [record for _, record in _lines(path, log)]


def _lines(path: Path, log: Optional[Callable[[str], None]]) -> List[Tuple[str, dict]]:
    """``(line, record)`` for every line of ``path`` but blank ones and a partial last one."""
    numbered = [(number, line) for number, line in enumerate(path.read_bytes().split(b"\n"), 1) if line.strip()]
    kept = []
    for index, (number, line) in enumerate(numbered):
        record = _record(line)
        if record is not None:
            kept.append((line.decode("utf-8"), record))
        elif index == len(numbered) - 1:
            if log is not None:
                log(f"{path}:{number}: dropped a partial last line (the run stopped while writing it)")
        else:
            raise MetricsError(f"{path}:{number}: not a metrics record (a JSON object with a step and a kind): "
                               f"{line[:80]!r}")
    return kept


def _record(line: bytes) -> Optional[dict]:
    """The record on ``line``, or ``None`` if it is not one."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8 (a ValueError too), absurd nesting
        return None
    if not (isinstance(record, dict) and type(record.get("step")) is int and isinstance(record.get("kind"), str)):
        return None
    return record


class MetricsLogger:
    """Writes records for one run (a no-op on ranks other than 0)."""

    def __init__(self, run_dir: Path, total_steps: int, resume_step: int = 0, enabled: bool = True,
                 tensorboard: bool = True, interactive: Optional[bool] = None, description: str = "training"):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._writer = None
        self._bar = None
        if not enabled:
            return
        self._truncate_after(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1)
        if self.interactive:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=resume_step, desc=description, dynamic_ncols=True)

    def _truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (left by a run that stopped after its last checkpoint)."""
        if not self.path.is_file():
            return
        kept = [line for line, record in _lines(self.path, self.message) if record["step"] <= step]
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text("".join(line + "\n" for line in kept))
        os.replace(temporary, self.path)

    def log(self, record: Dict[str, Any], console: Optional[str] = None) -> None:
        """Append ``record``; show ``console`` as a progress-bar postfix or as a line."""
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, allow_nan=True) + "\n")
        if self._writer is not None:
            for name, value in _scalars(record):
                self._writer.add_scalar(name, value, record["step"])
        if console:
            if self._bar is not None:
                self._bar.set_postfix_str(console)
            else:
                print(console, flush=True)

    def message(self, text: str) -> None:
        """A line for the reader (a warning, a skipped step), above the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()


def _scalars(record: Dict[str, Any], prefix: str = ""):
    """``(tag, value)`` for every finite number in a record, nested keys joined by ``/``."""
    kind = record.get("kind", "")
    for key, value in record.items():
        if key in ("step", "kind"):
            continue
        tag = f"{prefix or kind}/{key}"
        if isinstance(value, dict):
            yield from _scalars({k: v for k, v in value.items()}, tag)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield tag, value
