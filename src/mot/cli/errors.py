"""How ``mot`` reports a failure: one line on stderr and an exit status; tracebacks only with ``--debug``.

* a training run the guard stopped: ``mot: training stopped: <why>``, exit 1;
* bad input or a bad file (any :class:`~mot.errors.MotError`): ``mot: error: <message>``, exit 2;
* a file that cannot be read or written: ``mot: error: <file>: <reason>``, exit 2, and a full disk
  says so: ``mot: error: the disk is full (No space left on device) while writing <file>``;
* Ctrl-C: ``mot: interrupted``, exit 130;
* anything else, a bug in mot: ``mot: internal error: <type>: <message> (run with --debug for the
  traceback)``, exit 1.

A message of several lines keeps its first line on the ``mot:`` line and the rest indented below,
so a script that greps for ``mot: error:`` finds exactly one line per failure.
"""

from __future__ import annotations

import errno
import os
from typing import Tuple

from ..errors import MotError, first_line
from ..train.errors import TrainingError

#: Exit status for bad input (the same as argparse's usage errors).
USAGE_ERROR = 2
#: Exit status for a stopped run or a bug in mot.
FAILED = 1
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def debug_requested(flag: bool) -> bool:
    """``--debug`` was given, or the environment sets ``MOT_DEBUG`` (to anything but 0/false/no),
    which also reaches ``torchrun ... -m mot``, where the flag has no place."""
    return flag or os.environ.get("MOT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def describe(error: BaseException) -> Tuple[str, int]:
    """The line ``mot`` prints for ``error`` (without a newline) and the exit status it returns.

    A lone surrogate (a YAML or JSON ``"\\ud800"`` escape quoted back in a message) is written as
    its escape: no stream can encode it, and printing the error must not fail in turn."""
    line, status = _describe(error)
    return line.encode("utf-8", "backslashreplace").decode("utf-8"), status


def _describe(error: BaseException) -> Tuple[str, int]:
    if isinstance(error, TrainingError):  # a stopped run, not a usage error
        return f"mot: training stopped: {_indented(str(error))}", FAILED
    if isinstance(error, MotError):
        return f"mot: error: {_indented(str(error))}", USAGE_ERROR
    if isinstance(error, OSError):
        return f"mot: error: {_os_error(error)}", USAGE_ERROR
    if isinstance(error, KeyboardInterrupt):
        return "mot: interrupted", INTERRUPTED
    return (f"mot: internal error: {type(error).__name__}: {first_line(error)} "
            f"(run with --debug for the traceback)"), FAILED


def _os_error(error: OSError) -> str:
    """``file: reason``; a full disk says so in words, since ``Errno 28`` alone puzzles people."""
    reason = error.strerror or str(error) or type(error).__name__
    files = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    if error.errno in _DISK_FULL:
        return f"the disk is full ({reason})" + (f" while writing {files}" if files else "")
    return f"{files}: {reason}" if files else reason


def _indented(message: str) -> str:
    """``message`` with its lines after the first indented, its blank lines dropped."""
    lines = [line for line in message.splitlines() if line.strip()]
    return "\n".join([lines[0], *("  " + line for line in lines[1:])]) if lines else ""
