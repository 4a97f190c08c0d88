"""Progress of long work: a tqdm bar on a terminal, plain lines through a log function otherwise.

A bar redraws itself in place, which is right on a terminal and wrong in a log file (one line per
redraw, or nothing at all when only stdout is kept). So :class:`Progress` picks by whether stderr
is a terminal: a tqdm bar there; else every ``every_seconds`` seconds (and at the end) one line
through ``log``, e.g.::

    image tokenizer (VQ): 300/1000 steps (30%), 12.3 steps/s, 0:24 elapsed, ~0:57 left, loss=0.1234

The environment variable ``MOT_PROGRESS`` forces the mode: ``bar``, ``lines`` or ``off`` (nothing
at all). Progress only reads a clock: it draws no random numbers and changes no computation.

This module is a low layer: it imports the standard library, tqdm and :mod:`mot.errors` only.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

from tqdm import tqdm

from mot.errors import MotError

ENVIRONMENT_VARIABLE = "MOT_PROGRESS"
MODES = ("bar", "lines", "off")

T = TypeVar("T")


class ProgressError(MotError, ValueError):
    """``MOT_PROGRESS`` holds a value that is not one of :data:`MODES`."""


def mode(bar: Optional[bool] = None) -> str:
    """``bar``, ``lines`` or ``off``: the environment's choice, else ``bar``'s, else by stderr."""
    forced = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ProgressError(f"{ENVIRONMENT_VARIABLE}={forced!r}: must be one of {', '.join(MODES)}")
        return forced
    if bar is None:
        bar = sys.stderr.isatty()
    return "bar" if bar else "lines"


def format_duration(seconds: float) -> str:
    """``m:ss`` under an hour, ``h:mm:ss`` from then on (``0:24``, ``12:05``, ``1:02:03``)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(per_second: float) -> str:
    """Three significant digits (``12.3``, ``0.562``), whole numbers with separators from 1,000 on."""
    return f"{per_second:,.0f}" if per_second >= 1000 else f"{per_second:.3g}"


def format_value(value: Any) -> str:
    """Floats to four significant digits (a loss of 2.34567 reads ``2.346``), anything else as is."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Progress of one long task: a tqdm bar when stderr is a terminal, else a plain line through
    ``log`` every ``every_seconds`` seconds (and at the end): description, done/total, percent,
    rate, elapsed, estimated time left, and the latest values given to update (e.g. loss).

    ``bar`` forces the bar (``True``) or the lines (``False``); ``None`` decides by
    ``sys.stderr.isatty()``. ``MOT_PROGRESS=bar|lines|off`` overrides both. With a bar the final
    line is still logged on close, so a log keeps a record of every finished task. ``clock`` is
    the monotonic clock read for rates and for when a line is due (tests pass their own).
    """

    def __init__(self, description: str, total: Optional[int] = None, *, log: Callable[[str], None] = print,
                 unit: str = "it", every_seconds: float = 30.0, bar: Optional[bool] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.description, self.total, self.unit = description, total, unit
        self.log, self.every_seconds, self.clock = log, every_seconds, clock
        self.mode = mode(bar)
        self.done = 0
        self.values: dict[str, Any] = {}
        self.start = self.last_line = clock()
        self._logged_at: Optional[int] = None  # ``done`` when the latest line was logged
        self._closed = False
        self._bar = None
        if self.mode == "bar":
            self._bar = tqdm(total=total, desc=description, unit=f" {unit}", leave=False, dynamic_ncols=True,
                             file=sys.stderr)

    def update(self, n: int = 1, **values: Any) -> None:
        """Count ``n`` more units done; ``values`` (e.g. ``loss=2.3``) replace the ones shown."""
        self.done += n
        self.values.update(values)
        if self._bar is not None:
            if values:
                self._bar.set_postfix_str(self._values_text(), refresh=False)
            self._bar.update(n)
        elif self.mode == "lines":
            now = self.clock()
            if now - self.last_line >= self.every_seconds:
                self.last_line = now
                self._log_line(now)

    def close(self) -> None:
        """End the task: close the bar, and log the final line unless the latest line already
        showed the same count. A second close does nothing."""
        self._finish(final_line=True)

    def _finish(self, final_line: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        if final_line and self.mode != "off" and self._logged_at != self.done:
            self._log_line(self.clock())

    def _line(self, now: float) -> str:
        """The progress at ``now`` as one line (see the module docstring)."""
        elapsed = now - self.start
        counts = f"{self.done:,} {self.unit}"
        if self.total is not None:
            percent = f" ({100 * self.done // self.total}%)" if self.total > 0 else ""
            counts = f"{self.done:,}/{self.total:,} {self.unit}{percent}"
        parts = [counts]
        rate = self.done / elapsed if elapsed > 0 else None
        if rate is not None:
            parts.append(f"{format_rate(rate)} {self.unit}/s")
        parts.append(f"{format_duration(elapsed)} elapsed")
        if self.total is not None and rate and self.done < self.total:
            parts.append(f"~{format_duration((self.total - self.done) / rate)} left")
        if self.values:
            parts.append(self._values_text())
        return f"{self.description}: {', '.join(parts)}"

    def _values_text(self) -> str:
        return ", ".join(f"{name}={format_value(value)}" for name, value in self.values.items())

    def _log_line(self, now: float) -> None:
        self._logged_at = self.done
        self.log(self._line(now))
        # print() into a file or a pipe waits in a buffer, where whoever reads the log cannot see it
        if sys.stdout is not None:
            sys.stdout.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, error_type: Any, *_: Any) -> None:
        # A task that failed before its first unit (e.g. a source that is not installed) has no
        # progress to report; the error says what happened.
        self._finish(final_line=error_type is None or self.done > 0)


def progress(iterable: Iterable[T], description: str, total: Optional[int] = None, **kwargs: Any) -> Iterator[T]:
    """Yield the items of ``iterable``, counting each in a :class:`Progress` (``kwargs`` go to it);
    ``total`` defaults to ``len(iterable)`` where it has one. Closed when the loop ends or stops."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(description, total, **kwargs) as tracker:
        for item in iterable:
            yield item
            tracker.update()
