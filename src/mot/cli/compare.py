"""``mot compare --config FILE [--out DIR] [--variant NAME] [--report-only] [key=value ...]``: train
an experiment's architectures side by side and report."""

from __future__ import annotations

import argparse

from rich.console import Console

from .arguments import add_config, add_out, add_overrides, with_out_dir


def add_parser(verbs) -> None:
    compare = verbs.add_parser("compare", help="train an experiment's architectures side by side and report")
    add_config(compare, "configs/experiments/chameleon.yaml", "an experiment")
    add_out(compare, "where the experiment's runs and report go (default: the experiment's out_dir)")
    compare.add_argument("--variant", metavar="NAME",
                         help="one of the experiment's named override lists (variants:), e.g. gpu")
    compare.add_argument("--report-only", action="store_true",
                         help="train nothing: report the runs that have finished and name the ones that have not")
    add_overrides(compare, "overrides=[steps=100]")
    compare.set_defaults(run=_compare)


def _compare(args: argparse.Namespace, console: Console) -> int:
    from ..experiments.compare import run_compare
    from ..experiments.experiment import load_experiment

    experiment = load_experiment(args.config, with_out_dir(args.overrides, args.out))
    run_compare(experiment, args.variant, log=console.out, report_only=args.report_only)
    return 0
