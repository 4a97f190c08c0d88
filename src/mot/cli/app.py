"""The ``mot`` command: one module per verb registers its arguments; the work lives in the library.

Every verb takes its input as ``--config FILE`` or a positional ``RUN``, writes to ``--out``, and
takes trailing ``key=value`` overrides where it reads a config (:mod:`.arguments`). Bad input (an
unknown preset or key, a missing file, an invalid value) prints one line to stderr and exits with
status 2; :mod:`.errors` maps every failure to its line and status. ``mot --debug <verb> ...`` (or
``MOT_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from rich.console import Console

from . import analyze, bench, compare, config, eval, export, generate, prepare, serve, train
from .errors import debug_requested, describe

#: in the order ``mot --help`` lists them: from a model config to the analysis of trained runs
VERBS = (config, prepare, train, compare, generate, eval, export, analyze, serve, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mot", description="Mixture-of-Transformers: model configs, data, training, comparisons, generation "
                                "and analyses. Inputs: --config FILE or a RUN directory; outputs: --out.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a failure instead of one line (also: MOT_DEBUG=1)")
    verbs = parser.add_subparsers(dest="verb", required=True,
                                  metavar="{" + ",".join(verb.__name__.rsplit(".", 1)[1] for verb in VERBS) + "}")
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``mot`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a trailing nargs="*" positional at the first option, so
    # `show --config NAME --dry-run a=1` leaves `a=1` over; it is still an override.
    if extra and hasattr(args, "overrides") and not any(item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # Outside a terminal (pipes, files, tests) rich would fold wide tables at 80 columns.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    try:
        return args.run(args, console)
    except (Exception, KeyboardInterrupt) as error:
        if debug_requested(args.debug):
            raise
        line, status = describe(error)
        print(line, file=sys.stderr)
        return status
