"""``mot train --config FILE [--out DIR] [--dry-run] [key=value ...]`` (also ``torchrun
--nproc-per-node N -m mot train ...``): a run, or its dry run on the meta device."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from ..runs.recipe import load_recipe
from .arguments import add_config, add_out, add_overrides, with_out_dir


def add_parser(verbs) -> None:
    train = verbs.add_parser("train", help="train a recipe (on N GPUs: torchrun --nproc-per-node N -m mot train ...)")
    add_config(train, "configs/recipes/tiny/chameleon.yaml", "a recipe")
    add_out(train, "the runs directory; the run goes to OUT/<name> (default: the recipe's out_dir)")
    train.add_argument("--dry-run", action="store_true",
                       help="check the recipe on the meta device: parameters, FLOPs, tokens, memory per GPU")
    add_overrides(train, "steps=200 model.n_layers=2")
    train.set_defaults(run=_train)


def _train(args: argparse.Namespace, console: Console) -> int:
    config = load_recipe(args.config, with_out_dir(args.overrides, args.out))
    if args.dry_run:
        return _dry_run(config, console)
    from ..train.distributed import shutdown
    from ..train.trainer import Trainer

    trainer = Trainer(config, log=console.out)
    trainer.train()
    shutdown(trainer.context)
    return 0


def _dry_run(config, console: Console) -> int:
    from ..runs.resolve import resolve_for_dry_run
    from ..train.dry_run import dry_run

    config = resolve_for_dry_run(config, log=console.out)
    report = dry_run(config)
    table = Table(title=f"{config.name}: {config.steps:,} steps (meta device, nothing allocated)", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    for name, value in report.lines().items():
        table.add_row(name, value)
    console.print(table)
    return 0
