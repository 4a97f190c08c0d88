"""``mot bench --config MODEL``: training-step throughput of dense, MoT and MoE-4x at equal FLOPs per
token for a model size, sequence length and modality mix, on this machine (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from .arguments import add_out, add_overrides, positive_int


def add_parser(verbs) -> None:
    bench = verbs.add_parser("bench", help="time training steps of dense, MoT and MoE-4x at equal FLOPs")
    bench.add_argument("--config", required=True, metavar="MODEL",
                       help="a model preset (mot config list) or model YAML: its sizes; each architecture sets "
                            "its own towers and MoE")
    add_overrides(bench, "d_model=256 n_layers=4")
    bench.add_argument("--seq", type=positive_int, default=2048, help="tokens per sequence (default 2048)")
    bench.add_argument("--batch", type=positive_int, default=2, help="sequences per step (default 2)")
    bench.add_argument("--modalities", type=int, choices=[1, 2, 3], default=2,
                       help="2: text + image (default), 3: + speech")
    bench.add_argument("--architectures", default="dense,mot,moe4x", help="comma list (default dense,mot,moe4x)")
    bench.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    bench.add_argument("--bf16", action="store_true", help="bfloat16 weights and activations")
    bench.add_argument("--compile", action="store_true", help="torch.compile each model")
    bench.add_argument("--rounds", type=positive_int, default=10,
                       help="timed training steps of each architecture, round-robin (default 10)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    bench.add_argument("--peak-tflops", type=float, default=None,
                       help="the device's peak TFLOP/s for MFU (known GPUs in bf16 are looked up)")
    bench.add_argument("--profile", type=Path, default=None, metavar="DIR",
                       help="after timing, profile one more step of each architecture: DIR/<architecture>.txt "
                            "(operators by time) and .trace.json")
    add_out(bench, "also write every number to this JSON file")
    bench.set_defaults(run=_bench)


def _bench(args: argparse.Namespace, console: Console) -> int:
    from ..presets import resolve_model_config
    from ..train.bench import BenchSettings, markdown, run_bench

    model = resolve_model_config(args.config, args.overrides)
    settings = BenchSettings(model, seq=args.seq, batch=args.batch, modalities=args.modalities,
                             architectures=[a for a in args.architectures.split(",") if a], device=args.device,
                             bf16=args.bf16, compile=args.compile, rounds=args.rounds, warmup=args.warmup,
                             peak_flops=None if args.peak_tflops is None else args.peak_tflops * 1e12,
                             profile_dir=args.profile)
    report = run_bench(settings, log=console.out)
    console.out(markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        console.out(f"wrote {args.out}")
    return 0
