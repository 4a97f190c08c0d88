"""The ``mot`` command.

``mot config list``                                    the paper's model presets
``mot config show <preset|file.yaml> [key=value ...]``  the resolved config as YAML
    ``--dry-run [--context N]``                        + parameter and FLOP accounting, checked
                                                       against the model built on the meta device
``mot config save <preset|file.yaml> <out.yaml> [key=value ...]``
``mot summary [--context N]``                          every paper preset: sizes and FLOPs per token

Bad input (an unknown preset or key, a missing file, an invalid value) prints one line to stderr
and exits with status 2; :mod:`mot.cli_errors` maps every failure to its line and status.
``mot --debug <verb> ...`` (or ``MOT_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import yaml
from rich.console import Console
from rich.table import Table

from .cli_errors import debug_requested, describe
from .config import ConfigError, ModelConfig, load_config, save_config
from .model.accounting import flops_per_token, format_number, verify_parameter_counts
from .presets import get_preset, is_preset, preset_info, preset_names


def resolve_config(source: str, overrides: Sequence[str] = ()) -> ModelConfig:
    """A preset name or a YAML file, then ``key=value`` overrides, validated.

    Unknown preset names raise :class:`ConfigError` with the closest preset names.
    """
    looks_like_file = source.endswith((".yaml", ".yml")) or "/" in source or Path(source).is_file()
    if looks_like_file and not is_preset(source):
        return load_config(ModelConfig, source, overrides)
    return load_config(ModelConfig, None, overrides, base=get_preset(source))


def preset_table(context_length: Optional[int] = None) -> Tuple[List[str], List[List[str]]]:
    """Header and rows describing every paper preset (the tiny ones left out).

    Counts are analytic and checked against each model built on the meta device. FLOPs are per
    training token at ``context_length`` (default: each preset's ``max_seq_len``, 4,096 for all).
    """
    rows, lengths = [], set()
    for name in preset_names():
        info = preset_info(name)
        if info.setting == "tiny":
            continue
        config = get_preset(name)
        counts = verify_parameter_counts(config)
        length = context_length or config.max_seq_len
        lengths.add(length)
        towers = " · ".join(f"{group} {format_number(count)}"
                            for group, count in counts.non_embedding_per_group.items())
        rows.append([name, info.table, info.paper_size, format_number(counts.total),
                     format_number(counts.active), towers,
                     f"{flops_per_token(config, length).training / 1e9:,.2f}"])
    at = f"S={lengths.pop()}" if len(lengths) == 1 else "S=max_seq_len"
    header = ["preset", "table", "paper size", "total params", "active params",
              "non-embedding per tower", f"train GFLOP/token ({at})"]
    return header, rows


# ---------------------------------------------------------------------------------- verbs --

def _config_list(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="mot presets (mot config show <name>)")
    for column in ("preset", "setting", "table", "paper size", "architecture"):
        table.add_column(column, no_wrap=column == "preset")
    for name in preset_names():
        info = preset_info(name)
        table.add_row(name, info.setting, info.table, info.paper_size, info.architecture)
    console.print(table)
    return 0


def _config_show(args: argparse.Namespace, console: Console) -> int:
    config = resolve_config(args.source, args.overrides)
    console.out(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    if args.dry_run:
        _dry_run(config, args.context, console)
    return 0


def _dry_run(config: ModelConfig, context: Optional[int], console: Console) -> None:
    length = context if context is not None else config.max_seq_len
    if length > config.max_seq_len:
        raise ConfigError(f"--context={length}: exceeds max_seq_len={config.max_seq_len}")
    counts = verify_parameter_counts(config)  # builds the model on the meta device: no memory

    def exact(value: float) -> str:
        return f"{value:,.0f}  ({format_number(value)})"

    params = Table(title="parameters")
    params.add_column("what")
    params.add_column("count", justify="right")
    params.add_row("total", exact(counts.total))
    params.add_row("embedding (token embedding + output head)", exact(counts.embedding))
    params.add_row("non-embedding", exact(counts.non_embedding))
    for group, count in counts.non_embedding_per_group.items():
        params.add_row(f"  non-embedding: {group}", exact(count))
    if counts.latent_path:
        params.add_row(f"{config.latent.modality} patch encoder/decoder + timestep embedding",
                       exact(counts.latent_path))
    params.add_row("active per token", exact(counts.active))
    params.add_row("active non-embedding per token", exact(counts.active_non_embedding))
    console.print(params)

    flops = flops_per_token(config, length)
    table = Table(title=f"FLOPs per token at context {length} (2 x multiply-adds; norms ignored)")
    table.add_column("what")
    table.add_column("FLOPs", justify="right")
    table.add_row("forward", exact(flops.forward))
    table.add_row("training (3 x forward)", exact(flops.training))
    table.add_row("  of which attention scores (forward)", exact(flops.attention_forward))
    if len(set(flops.forward_per_tower.values())) > 1:
        for tower, forward in flops.forward_per_tower.items():
            table.add_row(f"  forward, a token of tower {tower}", exact(forward))
    console.print(table)
    console.out(f"meta-device model: {counts.total:,} parameters, equal to the analytic count")


def _config_save(args: argparse.Namespace, console: Console) -> int:
    config = resolve_config(args.source, args.overrides)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    console.out(f"wrote {out}")
    return 0


def _prepare(args: argparse.Namespace, console: Console) -> int:
    from .data.prepare import PrepareConfig, prepare

    overrides = [*args.overrides, *(["skip_bad=true"] if args.skip_bad else [])]
    config = load_config(PrepareConfig, args.config, overrides)
    manifest = prepare(config, log=console.out)
    console.out(f"prepared {config.name}: {manifest}")
    return 0


def _train(args: argparse.Namespace, console: Console) -> int:
    from .train.commands import train_command

    return train_command(args.config, args.overrides, args.dry_run, console)


def _export(args: argparse.Namespace, console: Console) -> int:
    from .train.export import export_run

    export_run(args.run_dir, args.out, log=console.out)
    return 0


def _compare(args: argparse.Namespace, console: Console) -> int:
    from .eval.compare import run_compare
    from .eval.experiment import load_experiment
    from .train.commands import training_errors

    experiment = load_experiment(args.config, args.overrides)
    with training_errors():
        run_compare(experiment, args.preset, log=console.out)
    return 0


def _generate(args: argparse.Namespace, console: Console) -> int:
    from .generate.commands import generate_command

    return generate_command(args, console)


def _analyze_pca(args: argparse.Namespace, console: Console) -> int:
    from .eval.pca import analyze_pca

    out = args.out or str(Path(args.run_dir) / "analysis")
    numbers = analyze_pca(args.run_dir, out, split=args.split, batches=args.batches, log=console.out)
    console.out(f"wrote {out}/pca.png and {out}/pca.json")
    console.out(json.dumps(numbers, indent=1))
    return 0


def _analyze_caption_use(args: argparse.Namespace, console: Console) -> int:
    import numpy as np
    import torch

    from .eval.caption_use import caption_use
    from .eval.report import caption_use_table
    from .eval.samples import validation_images
    from .generate.pipeline import TransfusionPipeline

    pipeline = TransfusionPipeline.from_run(args.run_dir, log=console.out)
    corpus = pipeline.corpus_dir
    scenes = validation_images(corpus, args.scenes)
    if len(scenes) < 2:
        raise ConfigError(f"{corpus} has {len(scenes)} ShapeScenes validation images; caption-use needs 2 or more")
    latents = torch.from_numpy(np.stack([scene["latent"] for scene in scenes]))
    errors = caption_use(pipeline.sampler, latents, [scene["caption"] for scene in scenes], seed=args.seed)
    out = Path(args.out or Path(args.run_dir) / "analysis")
    out.mkdir(parents=True, exist_ok=True)
    (out / "caption_use.json").write_text(json.dumps({"scenes": len(scenes), "errors": errors}, indent=1))
    console.out(f"mean squared noise error on {len(scenes)} validation scenes of {corpus}:")
    console.out("\n".join(caption_use_table({Path(args.run_dir).name: errors})))
    console.out(f"wrote {out}/caption_use.json")
    return 0


def _plot(args: argparse.Namespace, console: Console) -> int:
    from .eval.plots import plot_runs

    if Path(args.out).suffix.lower() != ".png":  # matplotlib would pick the format from the suffix
        raise ConfigError(f"--out {args.out}: must name a .png file")
    for run in args.runs:
        if not (Path(run) / "metrics.jsonl").is_file():
            raise ConfigError(f"{run} is not a run directory with metrics: {run}/metrics.jsonl is missing")
    console.out(f"wrote {plot_runs(args.runs, args.out, args.title)}")
    return 0


def _summary(args: argparse.Namespace, console: Console) -> int:
    header, rows = preset_table(args.context)
    table = Table(title="The paper's models (sparse models: the paper's size label counts active parameters)")
    for column in header:
        table.add_column(column, no_wrap=column == "preset",
                         justify="left" if column in ("preset", "table", "non-embedding per tower") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.out("total = embedding + every tower's non-embedding (+ Transfusion's U-Net); active = what one "
                "token uses (MoE: router + 1 expert). Details: mot config show <preset> --dry-run")
    return 0


# ---------------------------------------------------------------------------------- parser --

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mot",
                                     description="Mixture-of-Transformers: configs and model accounting.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a failure instead of one line (also: MOT_DEBUG=1)")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{config,prepare,train,compare,generate,analyze,export,plot,summary}")

    config = verbs.add_parser("config", help="list, show and save model configs")
    actions = config.add_subparsers(dest="action", required=True, metavar="{list,show,save}")
    actions.add_parser("list", help="the paper's model presets").set_defaults(run=_config_list)

    source_help = "a preset name (mot config list) or a YAML file"
    overrides_help = "key=value overrides, e.g. n_layers=2 moe.towers=[text]"
    show = actions.add_parser("show", help="print a resolved config as YAML")
    show.add_argument("source", help=source_help)
    show.add_argument("overrides", nargs="*", help=overrides_help)
    show.add_argument("--dry-run", action="store_true",
                      help="build the model on the meta device and print parameters and FLOPs")
    show.add_argument("--context", type=_positive_int,
                      help="with --dry-run: context length for FLOPs (default max_seq_len)")
    show.set_defaults(run=_config_show)

    save = actions.add_parser("save", help="write a resolved config to a YAML file")
    save.add_argument("source", help=source_help)
    save.add_argument("out", help="the YAML file to write")
    save.add_argument("overrides", nargs="*", help=overrides_help)
    save.set_defaults(run=_config_save)

    prepare = verbs.add_parser("prepare", help="build tokenizers and shards from the data sources")
    prepare.add_argument("--config", required=True, help="a data config, e.g. configs/data/ci.yaml")
    prepare.add_argument("overrides", nargs="*", help="key=value overrides, e.g. shapescenes=500")
    prepare.add_argument("--skip-bad", action="store_true",
                         help="skip bad documents of jsonl corpora and count them in the manifest")
    prepare.set_defaults(run=_prepare)

    train = verbs.add_parser("train", help="train a recipe (also: torchrun --nproc-per-node N -m mot.train)")
    train.add_argument("--config", required=True, help="a recipe, e.g. configs/recipes/tiny/chameleon-mot.yaml")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=200 model.n_layers=2")
    train.add_argument("--dry-run", action="store_true",
                       help="check the recipe on the meta device: parameters, FLOPs, tokens, memory per GPU")
    train.set_defaults(run=_train)

    export = verbs.add_parser("export", help="write a run's newest checkpoint as config.json + model.safetensors")
    export.add_argument("run_dir", metavar="RUN", help="a run directory (runs/<name>)")
    export.add_argument("out", help="the directory to write")
    export.set_defaults(run=_export)

    compare = verbs.add_parser("compare", help="train an experiment's architectures side by side and report")
    compare.add_argument("--config", required=True, help="an experiment, e.g. configs/experiments/chameleon.yaml")
    compare.add_argument("overrides", nargs="*", help="key=value overrides of the experiment, e.g. out_dir=/tmp/c")
    compare.add_argument("--preset", help="a named override list of the experiment, e.g. gpu")
    compare.set_defaults(run=_compare)

    generate = verbs.add_parser("generate", help="text -> image and image -> text with a Transfusion run")
    generate.add_argument("run_dir", metavar="RUN", help="a Transfusion-setting run directory (runs/<name>)")
    generate.add_argument("--prompt", action="append", default=[], help="a caption to draw (repeatable)")
    generate.add_argument("--caption", action="append", default=[], metavar="IMAGE",
                          help="an image file (PNG, JPEG) to caption (repeatable)")
    generate.add_argument("--out", default="samples", help="directory for the images (default ./samples)")
    generate.add_argument("--per-prompt", type=_positive_int, default=1, help="images per prompt (default 1)")
    generate.add_argument("--steps", type=_positive_int, default=250, help="denoising steps (default 250)")
    generate.add_argument("--method", default="ddpm", help="ddpm (default) or ddim")
    generate.add_argument("--cfg-scale", type=float, default=3.0, help="classifier-free guidance (default 3; 1: none)")
    generate.add_argument("--temperature", type=float, default=0.0, help="captions: 0 (default) is greedy")
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(run=_generate)

    analyze = verbs.add_parser("analyze", help="analyses of a trained run")
    analyses = analyze.add_subparsers(dest="analysis", required=True, metavar="{pca,caption-use}")
    pca = analyses.add_parser("pca", help="PCA of hidden states per layer, coloured by modality (figure 2b)")
    pca.add_argument("run_dir", metavar="RUN", help="a run directory (runs/<name>)")
    pca.add_argument("--out", help="output directory (default RUN/analysis)")
    pca.add_argument("--split", default="valid", help="the corpus split to read (default valid)")
    pca.add_argument("--batches", type=_positive_int, default=4, help="validation batches to read (default 4)")
    pca.set_defaults(run=_analyze_pca)
    use = analyses.add_parser("caption-use", help="Transfusion: the noise error with an image's own caption, "
                                                  "another's, none, and the transformer bypassed")
    use.add_argument("run_dir", metavar="RUN", help="a Transfusion-setting run directory (runs/<name>)")
    use.add_argument("--out", help="output directory (default RUN/analysis)")
    use.add_argument("--scenes", type=_positive_int, default=64, help="ShapeScenes validation images (default 64)")
    use.add_argument("--seed", type=int, default=0, help="the noise's seed (default 0)")
    use.set_defaults(run=_analyze_caption_use)

    plot = verbs.add_parser("plot", help="loss curves per modality of one or more runs, as a PNG")
    plot.add_argument("runs", nargs="+", help="run directories (runs/<name>)")
    plot.add_argument("--out", required=True, help="the PNG file to write")
    plot.add_argument("--title", default="", help="a title above the panels")
    plot.set_defaults(run=_plot)

    summary = verbs.add_parser("summary", help="parameters and FLOPs of every paper preset")
    summary.add_argument("--context", type=_positive_int,
                         help="context length for FLOPs (default each preset's max_seq_len, 4096)")
    summary.set_defaults(run=_summary)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``mot`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a trailing nargs="*" positional at the first option, so
    # `show NAME --dry-run a=1` leaves `a=1` over; it is still an override.
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
