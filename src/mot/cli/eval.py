"""``mot eval RUN [--checkpoint STEP|latest|all] [--split S ...] [--metrics M ...]``: a run's
checkpoints measured (validation losses, conditional perplexities, generation metrics) into
``RUN/eval.json`` and ``RUN/eval.md``."""

from __future__ import annotations

import argparse

from rich.console import Console

from .arguments import add_out, add_run, positive_int


def add_parser(verbs) -> None:
    from ..eval.catalogue import METRICS

    evaluate = verbs.add_parser("eval", help="measure a run's checkpoints: losses, conditional perplexities, "
                                             "FID/KID, attribute agreement, CIDEr-D/BLEU-4, WER")
    add_run(evaluate)
    add_out(evaluate, "the directory of eval.json and eval.md (default RUN)")
    evaluate.add_argument("--checkpoint", default="latest", metavar="STEP[,STEP...]|latest|all",
                          help="the checkpoint(s) to evaluate (default latest)")
    evaluate.add_argument("--split", nargs="+", dest="splits", metavar="SPLIT",
                          help="corpus splits (default: the run's validation splits)")
    evaluate.add_argument("--metrics", nargs="+", metavar="METRIC",
                          help=f"of {', '.join(METRICS)} (default: every one the run supports)")
    evaluate.add_argument("--samples", type=positive_int, default=100,
                          help="images, captions and utterances generated per metric and split (default 100)")
    evaluate.add_argument("--pairs", type=positive_int, default=64,
                          help="documents per source for the conditional perplexities (default 64)")
    evaluate.add_argument("--source", default="shapescenes",
                          help="the image source whose held-out set the image metrics use (default shapescenes)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    evaluate.add_argument("--denoising-steps", type=positive_int, default=50,
                          help="Transfusion: denoising steps per image (default 50)")
    evaluate.set_defaults(run=_eval)


def _eval(args: argparse.Namespace, console: Console) -> int:
    from ..eval.run_eval import EVAL_JSON, EVAL_MD, EvalOptions, evaluate_run

    options = EvalOptions(checkpoint=args.checkpoint, splits=args.splits, metrics=args.metrics, pairs=args.pairs,
                          samples=args.samples, seed=args.seed, source=args.source,
                          denoising_steps=args.denoising_steps)
    out = args.out or args.run_dir
    evaluate_run(args.run_dir, options, log=console.out, out=out)
    console.out(f"wrote {out}/{EVAL_JSON} and {out}/{EVAL_MD}")
    return 0
