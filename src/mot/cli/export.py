"""``mot export RUN --out DIR [--format {mot,hf}]``: a run's newest checkpoint in the release form, or
as a Hugging Face directory."""

from __future__ import annotations

import argparse

from rich.console import Console

from .arguments import add_out, add_run


def add_parser(verbs) -> None:
    export = verbs.add_parser("export", help="write a run's newest checkpoint as config.json + model.safetensors")
    add_run(export)
    add_out(export, "the directory to write (it must not hold a model)", required=True)
    export.add_argument("--format", choices=["mot", "hf"], default="mot",
                        help="mot: for MoTModel.from_pretrained (default); hf: for transformers' "
                             "AutoModelForCausalLM (a Llama if the model is one, else the MoT class, "
                             "loaded with trust_remote_code)")
    export.set_defaults(run=_export)


def _export(args: argparse.Namespace, console: Console) -> int:
    from ..runs.model import export_run

    export_run(args.run_dir, args.out, log=console.out, format=args.format)
    return 0
