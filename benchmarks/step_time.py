"""Training-step time of dense, MoT, MoE-4x and two naive MoT routings, side by side.

One step is forward + backward of the summed cross-entropy over every token (random targets, no
optimizer). All cases run in ONE process, round-robin (A B C ... A B C ...): a few warm-up
rounds, then ``--rounds`` timed rounds. The table gives each case's median and its throughput
relative to the dense model with the same modalities (``dense_ms / case_ms``; 1.00 = as fast).

Variants (``--variants``):

* ``dense``: every modality mapped to the ``shared`` tower, through the model's fast path.
* ``mot``: one tower per modality, the fast path (residual stream kept as per-tower parts, routing plan
  built once per batch on the host, outside the timed region, as the loader does).
* ``moe4x``: dense + Expert-Choice MoE-4x FFN, capacity factor 1 (dense FLOPs + router).
* ``mot-boolean-mask``: the same MoT weights through ``reference_logits`` (Algorithm 1) with
  ``x[mask]`` / ``out[mask] = y`` per tower, like the authors' tutorial, and SDPA attention.
* ``mot-run-all-select``: the same, but every tower's module runs on ALL tokens and
  ``torch.where`` picks each token's result (as some public ports do).
* ``dense-noroute`` (extra): the dense weights through ``reference_logits`` with no routing at all,
  i.e. a plain transformer; the fast path's dense plan reorders nothing either, so this is a noise gauge.

Before timing, the benchmark checks that the MoT fast-path logits equal the boolean-mask reference
logits (and the other routings) for the same weights and prints the max abs differences, so the
timed computations are the same function.

Sequences are realistic interleavings: text runs of 20-300 tokens, 256-token image spans and (with
three modalities) speech runs of 50-250 tokens; the next segment's modality is the one with the
fewest tokens so far, so modalities are roughly balanced. The mask is plain causal (Chameleon
setting), so every variant uses SDPA's causal kernel and only routing differs.

CPU hygiene: on CPU the script re-executes itself once with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` set high (glibc otherwise returns large freed blocks to the OS and
page-faults them back every step); ``--no-malloc-tuning`` turns this off.

    python benchmarks/step_time.py                      # defaults: width 512, seq 2048, batch 2
    python benchmarks/step_time.py --device cuda --bf16 --layers 8 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

from machine import machine_info  # benchmarks/machine.py: run as a script, this folder is on the path

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(16 << 30), "MALLOC_TRIM_THRESHOLD_": str(16 << 30)}
MODALITY_NAMES = ["text", "image", "speech"]
ALL_VARIANTS = ["dense", "mot", "moe4x", "mot-boolean-mask", "mot-run-all-select", "dense-noroute"]
DEFAULT_VARIANTS = ALL_VARIANTS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=512, help="d_model")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048, help="sequence length")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--modalities", default="2,3",
                   help="comma list of modality counts to run (2: text+image, 3: +speech)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma list from {ALL_VARIANTS}")
    p.add_argument("--rounds", type=int, default=15, help="timed round-robin rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed round-robin rounds first")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 weights and activations (for CUDA); loss in fp32. Not autocast: the "
                        "Algorithm 1 reference's out[mask] = y cannot mix autocast's dtypes")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: os.cpu_count())")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-verify", action="store_true", help="skip the logits equality check")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="do not re-exec with glibc MALLOC_*_THRESHOLD_ set")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = p.parse_args(argv)
    args.modality_counts = [int(m) for m in args.modalities.split(",") if m]
    args.variant_list = [v for v in args.variants.split(",") if v]
    for v in args.variant_list:
        if v not in ALL_VARIANTS:
            p.error(f"--variants: unknown variant {v!r}; expected some of {ALL_VARIANTS}")
    for m in args.modality_counts:
        if not 1 <= m <= len(MODALITY_NAMES):
            p.error(f"--modalities: {m} is not in 1..{len(MODALITY_NAMES)}")
    return args


def maybe_reexec_with_malloc_env(args: argparse.Namespace) -> None:
    """Re-run this script once with glibc's trim/mmap thresholds raised (CPU only)."""
    if args.device != "cpu" or args.no_malloc_tuning or all(k in os.environ for k in MALLOC_ENV):
        return
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()}}
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)


# ----------------------------------------------------------------------------- routings --

def route_run_all_select(per_tower, x, tower_masks: dict):
    """Every tower's module on ALL tokens, then ``torch.where`` keeps each token's own result."""
    import torch

    out = None
    for tower, mask in tower_masks.items():
        y = per_tower.for_tower(tower)(x)
        if out is None:
            out = y
        else:
            keep = mask.view(*mask.shape, *([1] * (y.dim() - mask.dim())))
            out = torch.where(keep, y, out)
    return out


def route_shared(per_tower, x, tower_masks: dict):
    """No routing: the single shared module on every token (dense models only)."""
    assert per_tower.shared, "route_shared is only valid for components with one weight group"
    return per_tower.for_tower(next(iter(tower_masks)))(x)


# --------------------------------------------------------------------------------- cases --

@dataclass
class Case:
    variant: str
    modalities: int
    forward: Callable  # () -> logits [B, L, V]
    model: object
    times_ms: List[float]


def build_cases(args, device):
    """All timed cases, the batch of each modality count, and every routing's forward by count."""
    rng = random.Random(args.seed)
    cases: List[Case] = []
    batches, forwards = {}, {}
    for m in args.modality_counts:
        setting_cases, batches[m], forwards[m] = build_setting(m, args, device, rng)
        cases += setting_cases
    return cases, batches, forwards


def build_setting(m: int, args, device, rng: random.Random):
    """Models, one batch and the forward of every variant for ``m`` modalities.

    Kept in its own function so each closure binds this setting's tensors (not the last loop's).
    """
    import torch

    from mot import ModelConfig
    from mot.model import build_model
    from mot.model.attention_backends import SDPAAttention
    from mot.model.reference import reference_logits, route_by_boolean_index
    from mot.train.bench import interleaved_modalities

    names = MODALITY_NAMES[:m]
    base = dict(vocab_size=args.vocab, d_model=args.width, n_heads=args.heads, n_layers=args.layers,
                max_seq_len=args.seq, modalities=names, attention_backend="sdpa")
    dense_towers = {name: "shared" for name in names}
    configs = {"mot": ModelConfig(**base),
               "dense": ModelConfig(**base, towers=dense_towers),
               "moe4x": ModelConfig(**base, towers=dense_towers,
                                    moe={"towers": ["shared"], "num_experts": 4,
                                         "routing": "expert_choice", "capacity_factor": 1.0})}
    torch.manual_seed(args.seed + m)
    models = {name: build_model(config, device=device) for name, config in configs.items()
              if name != "moe4x" or "moe4x" in args.variant_list}  # mot and dense are needed to verify
    if args.bf16:
        for model in models.values():
            model.to(torch.bfloat16)

    modality_ids = interleaved_modalities(args.batch, args.seq, m, rng).to(device)  # the batches of mot bench
    generator = torch.Generator().manual_seed(args.seed + 100 + m)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator).to(device)
    targets = torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator).to(device)
    positions = torch.arange(args.seq, device=device).expand(args.batch, args.seq)
    plans = {name: model.plan_for(modality_ids) for name, model in models.items()}  # host, untimed
    batch = dict(tokens=tokens, targets=targets, modality_ids=modality_ids,
                 tokens_per_modality={n: int((modality_ids == i).sum()) for i, n in enumerate(names)})
    sdpa = SDPAAttention()

    def fast(name):
        model, plan = models[name], plans[name]
        return lambda: model(tokens, modality_ids, positions=positions, plan=plan).logits

    def ref(name, route):
        model = models[name]
        return lambda: reference_logits(model, tokens, modality_ids, positions=positions,
                                        attention=sdpa, route=route)

    forwards = {"dense": fast("dense"), "mot": fast("mot"),
                "mot-boolean-mask": ref("mot", route_by_boolean_index),
                "mot-run-all-select": ref("mot", route_run_all_select),
                "dense-noroute": ref("dense", route_shared)}
    if "moe4x" in models:
        forwards["moe4x"] = fast("moe4x")
    model_of = {"dense": "dense", "dense-noroute": "dense", "moe4x": "moe4x"}
    cases = [Case(v, m, forwards[v], models[model_of.get(v, "mot")], []) for v in args.variant_list]
    return cases, batch, forwards


def verify(forwards, args) -> Dict[str, float]:
    """Max abs logits difference of each routing against the boolean-mask Algorithm 1 reference."""
    import torch

    diffs = {}
    with torch.no_grad():
        reference = forwards["mot-boolean-mask"]().float()
        for variant in ("mot", "mot-run-all-select"):
            logits = forwards[variant]().float()
            diffs[f"{variant} vs mot-boolean-mask"] = (logits - reference).abs().max().item()
        dense = forwards["dense"]().float()
        diffs["dense-noroute vs dense"] = (forwards["dense-noroute"]().float() - dense).abs().max().item()
        diffs["reference logits max abs"] = reference.abs().max().item()
    return diffs


# -------------------------------------------------------------------------------- timing --

def run(args) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads or os.cpu_count())
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    print(machine_line(args), flush=True)
    cases, batches, forwards = build_cases(args, device)
    checks = {} if args.no_verify else {m: verify(f, args) for m, f in forwards.items()}
    tolerance = 5e-2 if args.bf16 else 1e-4
    for m, batch in batches.items():
        print(f"{m} modalities, tokens per modality: {batch['tokens_per_modality']}", flush=True)
    for m, diffs in checks.items():
        shown = ", ".join(f"{k}: {v:.3g}" for k, v in diffs.items())
        print(f"verify ({m} modalities) max abs diff: {shown}", flush=True)
        worst = max(v for k, v in diffs.items() if " vs " in k)
        if worst > tolerance * max(1.0, diffs["reference logits max abs"]):
            raise SystemExit(f"verification failed ({m} modalities): the routings do not compute the same "
                             f"logits (max abs diff {worst:.3g}); refusing to time unequal computations")

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(case: Case) -> float:
        case.model.zero_grad(set_to_none=True)
        targets = batches[case.modalities]["targets"]
        sync()
        start = time.perf_counter()
        logits = case.forward()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                               reduction="sum")
        loss.backward()
        sync()
        return (time.perf_counter() - start) * 1e3

    for r in range(args.warmup + args.rounds):
        timed = r >= args.warmup
        for case in cases:
            elapsed = step(case)
            if timed:
                case.times_ms.append(elapsed)
        if timed:
            print(f"round {r - args.warmup + 1}/{args.rounds}: "
                  + " ".join(f"{c.variant}[{c.modalities}]={c.times_ms[-1]:.0f}ms" for c in cases), flush=True)
        else:
            print(f"warm-up {r + 1}/{args.warmup} done", flush=True)

    results = []
    for case in cases:
        dense = next((c for c in cases if c.variant == "dense" and c.modalities == case.modalities), None)
        median = statistics.median(case.times_ms)
        q = statistics.quantiles(case.times_ms, n=4) if len(case.times_ms) > 1 else [median] * 3
        results.append(dict(variant=case.variant, modalities=case.modalities, median_ms=median,
                            p25_ms=q[0], p75_ms=q[2], times_ms=case.times_ms,
                            vs_dense=statistics.median(dense.times_ms) / median if dense else None))
    return dict(machine=machine_info(args.device), command=" ".join([os.path.basename(sys.executable), *sys.argv]),
                args={k: v for k, v in vars(args).items() if k not in ("modality_counts", "variant_list")},
                malloc_env={k: os.environ.get(k) for k in MALLOC_ENV},
                tokens_per_modality={m: b["tokens_per_modality"] for m, b in batches.items()},
                verify_max_abs_diff=checks, results=results)


def markdown_table(report: dict) -> str:
    lines = ["| variant | modalities | median ms | p25-p75 ms | min ms | throughput vs dense |",
             "|---|---|---:|---:|---:|---:|"]
    for r in report["results"]:
        ratio = f"{r['vs_dense']:.3f}" if r["vs_dense"] is not None else "n/a"
        lines.append(f"| {r['variant']} | {r['modalities']} | {r['median_ms']:.0f} | "
                     f"{r['p25_ms']:.0f}-{r['p75_ms']:.0f} | {min(r['times_ms']):.0f} | {ratio} |")
    return "\n".join(lines)


def machine_line(args) -> str:
    info = machine_info(args.device)
    return ", ".join(f"{k}={v}" for k, v in info.items())


def main(argv=None) -> None:
    args = parse_args(argv)
    maybe_reexec_with_malloc_env(args)
    report = run(args)
    print()
    print(f"width {args.width}, heads {args.heads}, seq {args.seq}, batch {args.batch}, layers {args.layers}, "
          f"vocab {args.vocab}, {'bf16' if args.bf16 else 'fp32'}, device {args.device}, "
          f"{args.rounds} rounds after {args.warmup} warm-up")
    print(markdown_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
