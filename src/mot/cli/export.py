"""``mot export RUN --out DIR``: a run's newest checkpoint in the release form."""

from __future__ import annotations

import argparse

from rich.console import Console

from .arguments import add_out, add_run


def add_parser(verbs) -> None:
    export = verbs.add_parser("export", help="write a run's newest checkpoint as config.json + model.safetensors")
    add_run(export)
    add_out(export, "the directory to write (it must not hold a model)", required=True)
    export.set_defaults(run=_export)


def _export(args: argparse.Namespace, console: Console) -> int:
    from ..runs.model import export_run

    export_run(args.run_dir, args.out, log=console.out)
    return 0
