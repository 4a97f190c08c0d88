"""``mot analyze pca | caption-use | losses | fsdp``: analyses of trained runs, and of a model
trained with FSDP2 beyond one machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from .arguments import add_out, add_run, positive_int


def _counts(text: str) -> list:
    return [positive_int(part) for part in text.split(",") if part]


def add_parser(verbs) -> None:
    analyze = verbs.add_parser("analyze", help="analyses of trained runs (pca, caption-use, losses) and of "
                                               "FSDP2 at scale (fsdp)")
    analyses = analyze.add_subparsers(dest="analysis", required=True, metavar="{pca,caption-use,losses,fsdp}")

    pca = analyses.add_parser("pca", help="PCA of hidden states per layer, coloured by modality (figure 2b)")
    add_run(pca)
    add_out(pca, "output directory (default RUN/analysis)")
    pca.add_argument("--split", default="valid", help="the corpus split to read (default valid)")
    pca.add_argument("--batches", type=positive_int, default=4, help="validation batches to read (default 4)")
    pca.add_argument("--checkpoints", metavar="PERCENTS",
                     help="over training (appendix figure 23): the kept checkpoints nearest these shares of "
                          "the steps, e.g. 4%%,24%%,50%%,100%% (default: the newest checkpoint alone)")
    pca.set_defaults(run=_pca)

    use = analyses.add_parser("caption-use", help="Transfusion: the noise error with an image's own caption, "
                                                  "another's, none, and the transformer bypassed")
    add_run(use, "a Transfusion-setting run directory (runs/<name>)")
    add_out(use, "output directory (default RUN/analysis)")
    use.add_argument("--scenes", type=positive_int, default=64, help="ShapeScenes validation images (default 64)")
    use.add_argument("--seed", type=int, default=0, help="the noise's seed (default 0)")
    use.set_defaults(run=_caption_use)

    losses = analyses.add_parser("losses", help="loss curves per modality of one or more runs, as a PNG")
    losses.add_argument("runs", nargs="+", metavar="RUN", help="run directories (runs/<name>)")
    add_out(losses, "the PNG file to write", required=True)
    losses.add_argument("--title", default="", help="a title above the panels")
    losses.set_defaults(run=_losses)

    fsdp = analyses.add_parser("fsdp", help="predicted FSDP2 step time of dense, MoT and MoE-4x against GPU count "
                                            "(bytes each GPU sends, compute, overlap; docs/scaling.md)")
    fsdp.add_argument("--config", required=True, metavar="MODEL",
                      help="a model preset (mot config list) or model YAML: its sizes; each architecture sets "
                           "its own towers and MoE")
    fsdp.add_argument("--modalities", type=int, choices=[1, 2, 3], default=2, help="2: text + image (default), "
                                                                                  "3: + speech")
    fsdp.add_argument("--seq", type=positive_int, default=4096, help="tokens per sequence (default 4096)")
    fsdp.add_argument("--tokens-per-gpu", type=positive_int, default=8192,
                      help="tokens each GPU trains on per step (default 8192)")
    fsdp.add_argument("--gpus", type=_counts, default=[1, 8, 16, 32, 64, 128, 256],
                      help="GPU counts, comma list (default 1,8,16,32,64,128,256)")
    add_out(fsdp, "also write the table to this markdown file")
    fsdp.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                      help="the cluster's assumptions (defaults: the paper's A100 nodes), e.g. overlap=0.3 "
                           "inter_node_gbytes=100 param_bytes=2")
    fsdp.set_defaults(run=_fsdp)


def _default_out(args: argparse.Namespace) -> str:
    return args.out or str(Path(args.run_dir) / "analysis")


def _pca(args: argparse.Namespace, console: Console) -> int:
    from ..eval.pca import analyze_pca

    out = _default_out(args)
    if args.checkpoints:
        from ..eval.pca_over_training import analyze_pca_over_training, parse_fractions

        analyze_pca_over_training(args.run_dir, out, parse_fractions(args.checkpoints), split=args.split,
                                  batches=args.batches, log=console.out)
        console.out(f"wrote {out}/pca_over_training.png and {out}/pca_over_training.json")
        return 0
    numbers = analyze_pca(args.run_dir, out, split=args.split, batches=args.batches, log=console.out)
    console.out(f"wrote {out}/pca.png and {out}/pca.json")
    console.out(json.dumps(numbers, indent=1))
    return 0


def _caption_use(args: argparse.Namespace, console: Console) -> int:
    from ..eval.caption_use import analyze_caption_use

    analyze_caption_use(args.run_dir, _default_out(args), args.scenes, args.seed, log=console.out)
    return 0


def _losses(args: argparse.Namespace, console: Console) -> int:
    from ..eval.plots import plot_runs

    console.out(f"wrote {plot_runs(args.runs, args.out, args.title)}")
    return 0


def _fsdp(args: argparse.Namespace, console: Console) -> int:
    from ..config import load_config
    from ..presets import resolve_model_config
    from ..train.bench import MODALITIES, architecture_config
    from ..train.communication import Cluster, markdown, predict_series

    cluster = load_config(Cluster, None, args.overrides)
    model = resolve_model_config(args.config)
    modalities = MODALITIES[:args.modalities]
    configs = {a: architecture_config(model, a, modalities) for a in ("dense", "mot", "moe4x")}
    rows = predict_series(configs, args.seq, args.tokens_per_gpu, args.gpus, cluster)
    text = "\n".join(markdown(f"{args.config}, {', '.join(modalities)}", rows, "dense", cluster, args.seq,
                              args.tokens_per_gpu)) + "\n"
    console.out(text)
    if args.out:
        Path(args.out).write_text(text)
        console.out(f"wrote {args.out}")
    return 0
