"""The arguments every verb spells the same way.

* inputs: ``--config FILE`` (a data config, recipe, experiment, or a model preset's name), or a
  positional ``RUN`` (a run directory) for what reads a trained run;
* outputs: ``--out`` (a directory, or a file where one file is written);
* trailing ``key=value`` overrides of the config;
* counts are checked positive before anything runs.
"""

from __future__ import annotations

import argparse
from typing import List, Optional


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def add_config(parser: argparse.ArgumentParser, example: str, what: str = "a config") -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help=f"{what}, e.g. {example}")


def add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"overrides of the config, e.g. {example}")


def add_run(parser: argparse.ArgumentParser, what: str = "a run directory (runs/<name>)") -> None:
    parser.add_argument("run_dir", metavar="RUN", help=what)


def add_out(parser: argparse.ArgumentParser, help: str, required: bool = False, default: Optional[str] = None) -> None:
    parser.add_argument("--out", required=required, default=default, metavar="PATH", help=help)


def with_out_dir(overrides: List[str], out: Optional[str]) -> List[str]:
    """The overrides with ``out_dir=OUT`` last when ``--out`` was given (so it wins)."""
    return [*overrides, f"out_dir={out}"] if out else list(overrides)
