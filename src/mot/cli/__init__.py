"""``mot <verb>``: the command line, one module per verb (see :mod:`.app`)."""

from .app import main

__all__ = ["main"]
