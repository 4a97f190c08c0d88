"""``mot analyze pca | caption-use | losses``: analyses of trained runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from .arguments import add_out, add_run, positive_int


def add_parser(verbs) -> None:
    analyze = verbs.add_parser("analyze", help="analyses of trained runs: pca, caption-use, losses")
    analyses = analyze.add_subparsers(dest="analysis", required=True, metavar="{pca,caption-use,losses}")

    pca = analyses.add_parser("pca", help="PCA of hidden states per layer, coloured by modality (figure 2b)")
    add_run(pca)
    add_out(pca, "output directory (default RUN/analysis)")
    pca.add_argument("--split", default="valid", help="the corpus split to read (default valid)")
    pca.add_argument("--batches", type=positive_int, default=4, help="validation batches to read (default 4)")
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


def _default_out(args: argparse.Namespace) -> str:
    return args.out or str(Path(args.run_dir) / "analysis")


def _pca(args: argparse.Namespace, console: Console) -> int:
    from ..eval.pca import analyze_pca

    out = _default_out(args)
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
