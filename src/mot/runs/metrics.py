"""Reading a run's ``metrics.jsonl`` (the trainer's ``MetricsLogger`` writes it).

Every record is one JSON object with a ``step`` and a ``kind`` (``train`` or
``valid``); train records carry the loss per modality over the interval, the grad norm, the
learning rate, tokens/s per modality and, on a GPU, MFU and peak memory. When a run resumes, the
records after the checkpoint's step are dropped, so the file describes one unbroken run.

A run killed in the middle of a write leaves a partial last line: readers drop it (and say so
where they have a log). A bad line anywhere else is damage, an error naming the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, List, Optional, Tuple

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
    return [record for _, record in metric_lines(path, log)]


def metric_lines(path: Path, log: Optional[Callable[[str], None]]) -> List[Tuple[str, dict]]:
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
