"""``mot serve RUN [--host 127.0.0.1] [--port 8000] [--token T]``: the run's newest checkpoint behind
HTTP (docs/serving.md), requests batched continuously by tower."""

from __future__ import annotations

import argparse
import os

from rich.console import Console

from .arguments import add_run, positive_int


def add_parser(verbs) -> None:
    serve = verbs.add_parser("serve", help="serve a run over HTTP: completions, images, captions, speech")
    add_run(serve, "a run directory (runs/<name>) of any setting")
    serve.add_argument("--host", default="127.0.0.1",
                       help="the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
                            "interface, give --token then)")
    serve.add_argument("--port", type=positive_int, default=8000, help="default 8000")
    serve.add_argument("--token", default=os.environ.get("MOT_SERVE_TOKEN"),
                       help="require 'Authorization: Bearer TOKEN' on /v1 and /metrics (default: $MOT_SERVE_TOKEN; "
                            "none: no auth)")
    serve.add_argument("--step", type=positive_int, default=None, help="the checkpoint (default: the newest)")
    serve.add_argument("--threads", type=positive_int, default=None, metavar="N",
                       help="torch CPU threads (default: every core but one, left to the HTTP side)")
    limits = serve.add_argument_group("limits (a request beyond one gets an error naming it)")
    limits.add_argument("--max-batch", type=positive_int, default=8, metavar="N",
                        help="requests decoded together (default 8; 1 serves one at a time)")
    limits.add_argument("--max-queue", type=int, default=64, metavar="N",
                        help="requests waiting for the batch before new ones get 429 (default 64)")
    limits.add_argument("--max-prompt-tokens", type=positive_int, default=256, metavar="N", help="default 256")
    limits.add_argument("--max-new-tokens", type=positive_int, default=512, metavar="N", help="default 512")
    limits.add_argument("--max-body-bytes", type=positive_int, default=2 * 1024 * 1024, metavar="N",
                        help="the largest JSON body or upload (default 2 MiB)")
    limits.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="a request's time from arrival to answer before 504 (default 120)")
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace, console: Console) -> int:
    from ..serve.limits import ServeLimits
    from ..serve.served_model import ServedModel
    from ..serve.server import serve

    limits = ServeLimits(max_prompt_tokens=args.max_prompt_tokens, max_new_tokens=args.max_new_tokens,
                         max_body_bytes=args.max_body_bytes, max_batch=args.max_batch, max_queue=args.max_queue,
                         timeout_seconds=args.timeout)
    model = ServedModel.from_run(args.run_dir, step=args.step, log=console.out)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token:
        console.print(f"[yellow]warning:[/] serving on {args.host} without --token: anyone who reaches this "
                      "address can use the model")
    console.out(f"serving {model.name} ({model.setting}: {', '.join(model.tasks)}) on http://{args.host}:{args.port}")
    serve(model, args.host, args.port, limits, args.token, args.threads)
    return 0
