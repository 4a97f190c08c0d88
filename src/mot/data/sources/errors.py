"""Errors shared by every data source."""

from __future__ import annotations

from mot.errors import MotError


class SourceUnavailable(MotError, RuntimeError):
    """A source's program, package or files are not installed on this machine. The message names
    what is missing and the package that provides it, so the caller can skip the source with a
    clear reason instead of crashing."""
