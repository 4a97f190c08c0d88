"""Writing the metrics of a run: ``metrics.jsonl`` (read back by :mod:`mot.runs.metrics`),
TensorBoard events, and what the console shows.

Only rank 0 writes. Every record is one JSON object with a ``step`` and a ``kind`` (``train`` or
``valid``); train records carry the loss per modality over the interval, the grad norm, the
learning rate, tokens/s per modality and, on a GPU, MFU and peak memory. When a run resumes, the
records after the checkpoint's step are dropped, so the file describes one unbroken run.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ..progress import format_duration, mode as progress_mode
from ..runs.metrics import metric_lines
from ..runs.run_dir import METRICS_FILE


class MetricsLogger:
    """Writes records for one run (a no-op on ranks other than 0)."""

    def __init__(self, run_dir: Path, total_steps: int, resume_step: int = 0, enabled: bool = True,
                 tensorboard: bool = True, interactive: Optional[bool] = None, description: str = "training"):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        # a bar where progress.py would draw one (MOT_PROGRESS=lines|off: lines, which are the run's log)
        self.interactive = progress_mode() == "bar" if interactive is None else interactive
        # for the lines' "step 40/600, ~2:05 left": steps and seconds since this process started
        self.total_steps, self.step, self._first_step = total_steps, resume_step, resume_step
        self._started = time.monotonic()
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
        kept = [line for line, record in metric_lines(self.path, self.message) if record["step"] <= step]
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
                print(f"{console}{self._time_left()}", flush=True)

    def message(self, text: str) -> None:
        """A line for the reader (a warning, a skipped step), above the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def advance(self, steps: int = 1) -> None:
        self.step += steps
        if self._bar is not None:
            self._bar.update(steps)

    def _time_left(self) -> str:
        """``" (40/600 steps, ~2:05 left)"``: the estimate from this process's own steps (a resumed
        run's earlier ones ran elsewhere), evaluations and checkpoints included."""
        done = self.step - self._first_step
        if done <= 0:
            return ""
        left = (self.total_steps - self.step) * (time.monotonic() - self._started) / done
        return f" ({self.step}/{self.total_steps} steps, ~{format_duration(left)} left)"

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
