"""``mot config list | show | save``: the paper's model presets and resolved model configs.

``mot config list [--sizes [--context N]]``       the presets; with ``--sizes`` every paper preset's
                                                  parameters and FLOPs per token
``mot config show --config SOURCE [k=v ...] [--dry-run [--context N]]``
``mot config save --config SOURCE --out FILE [k=v ...]``

SOURCE is a preset name (``mot config list``) or a model config YAML file.
"""

from __future__ import annotations

import argparse

import yaml
from rich.console import Console
from rich.table import Table

from ..config import ConfigError, ModelConfig, save_config
from ..presets import preset_info, preset_names, resolve_model_config
from .arguments import add_out, add_overrides, positive_int

SOURCE = "a preset name (mot config list) or a model config YAML file"


def add_parser(verbs) -> None:
    config = verbs.add_parser("config", help="list, show and save model configs")
    actions = config.add_subparsers(dest="action", required=True, metavar="{list,show,save}")

    listing = actions.add_parser("list", help="the paper's model presets (--sizes: parameters and FLOPs)")
    listing.add_argument("--sizes", action="store_true",
                         help="every paper preset's parameters and training FLOPs per token")
    listing.add_argument("--context", type=positive_int,
                         help="with --sizes: context length for FLOPs (default each preset's max_seq_len, 4096)")
    listing.set_defaults(run=_list)

    show = actions.add_parser("show", help="print a resolved config as YAML")
    show.add_argument("--config", required=True, metavar="SOURCE", help=SOURCE)
    add_overrides(show, "n_layers=2 moe.towers=[text]")
    show.add_argument("--dry-run", action="store_true",
                      help="build the model on the meta device and print parameters and FLOPs")
    show.add_argument("--context", type=positive_int,
                      help="with --dry-run: context length for FLOPs (default max_seq_len)")
    show.set_defaults(run=_show)

    save = actions.add_parser("save", help="write a resolved config to a YAML file")
    save.add_argument("--config", required=True, metavar="SOURCE", help=SOURCE)
    add_out(save, "the YAML file to write", required=True)
    add_overrides(save, "n_layers=2")
    save.set_defaults(run=_save)


def _list(args: argparse.Namespace, console: Console) -> int:
    if args.context is not None and not args.sizes:
        raise ConfigError("--context: give it with --sizes")
    if args.sizes:
        return _sizes(args.context, console)
    table = Table(title="mot presets (mot config show --config <name>)")
    for column in ("preset", "setting", "table", "paper size", "architecture"):
        table.add_column(column, no_wrap=column == "preset")
    for name in preset_names():
        info = preset_info(name)
        table.add_row(name, info.setting, info.table, info.paper_size, info.architecture)
    console.print(table)
    return 0


def _sizes(context, console: Console) -> int:
    from ..eval.sizes import preset_table

    header, rows = preset_table(context)
    table = Table(title="The paper's models (sparse models: the paper's size label counts active parameters)")
    for column in header:
        table.add_column(column, no_wrap=column == "preset",
                         justify="left" if column in ("preset", "table", "non-embedding per tower") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.out("total = embedding + every tower's non-embedding (+ Transfusion's U-Net); active = what one "
                "token uses (MoE: router + 1 expert). Details: mot config show --config <preset> --dry-run")
    return 0


def _show(args: argparse.Namespace, console: Console) -> int:
    config = resolve_model_config(args.config, args.overrides)
    console.out(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    if args.dry_run:
        _dry_run(config, args.context, console)
    return 0


def _dry_run(config: ModelConfig, context, console: Console) -> None:
    from ..eval.sizes import accounting_rows

    parameters, flops, total = accounting_rows(config, context)
    for title, rows in (("parameters", parameters), (flops[0], flops[1])):
        table = Table(title=title)
        table.add_column("what")
        table.add_column("count" if title == "parameters" else "FLOPs", justify="right")
        for what, value in rows:
            table.add_row(what, value)
        console.print(table)
    console.out(f"meta-device model: {total:,} parameters, equal to the analytic count")


def _save(args: argparse.Namespace, console: Console) -> int:
    from pathlib import Path

    config = resolve_model_config(args.config, args.overrides)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    console.out(f"wrote {out}")
    return 0
