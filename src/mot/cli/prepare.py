"""``mot prepare --config FILE [--out DIR] [--skip-bad] [key=value ...]``: build the corpus."""

from __future__ import annotations

import argparse

from rich.console import Console

from ..config import load_config
from .arguments import add_config, add_out, add_overrides, with_out_dir


def add_parser(verbs) -> None:
    prepare = verbs.add_parser("prepare", help="build tokenizers and shards from the data sources")
    add_config(prepare, "configs/data/ci.yaml", "a data config")
    add_out(prepare, "the corpus directory to write (default: the config's out_dir)")
    prepare.add_argument("--skip-bad", action="store_true",
                         help="skip bad documents of jsonl corpora and count them in the manifest")
    add_overrides(prepare, "shapescenes=500")
    prepare.set_defaults(run=_prepare)


def _prepare(args: argparse.Namespace, console: Console) -> int:
    from ..data.prepare import PrepareConfig, prepare

    overrides = with_out_dir([*args.overrides, *(["skip_bad=true"] if args.skip_bad else [])], args.out)
    config = load_config(PrepareConfig, args.config, overrides)
    manifest = prepare(config, log=console.out)
    console.out(f"prepared {config.name}: {manifest}")
    return 0
