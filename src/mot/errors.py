"""The one base class of the errors mot raises for bad input, bad files and stopped runs.

Every library error that a user can cause (a config value, a token id, a damaged file, a
checkpoint that does not fit) derives from :class:`MotError` as well as from the built-in
exception it has always been (``ValueError``, ``RuntimeError``), so the CLI turns all of them
into one line and a non-zero exit without listing them, and Python callers keep catching what
they caught before. This module imports nothing: every layer may use it.
"""


class MotError(Exception):
    """Bad input, a bad file or a stopped run; the message names the field, file or value."""


def first_line(error: BaseException) -> str:
    """The first non-blank line of ``error``'s message, stripped (its type's name if it has none):
    what a one-line report quotes of a library's multi-line message."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
