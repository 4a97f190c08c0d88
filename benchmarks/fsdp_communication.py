"""The FSDP2 communication model (``mot.train.communication``) against 2 gloo ranks on this machine.

The model predicts a rank's step as compute plus the communication compute cannot hide, with
``bytes_per_step`` over the link's bandwidth. Here every term is measured on its own and the sum
is set beside the measured 2-rank step, for dense, MoT and MoE-4x at equal FLOPs per token:

1. the link: gloo ``all_gather`` of a large tensor between 2 processes (bytes sent per rank / s),
   and of one number (the fixed cost of a collective);
   Each architecture's bytes are also counted in one step (``counting_sent_bytes``) beside the formula's;
2. compute: one process, one thread, the unsharded model, forward + backward of one rank's batch;
3. the 2-rank FSDP2 step (the trainer's ``shard_model``), each rank on one thread, same batch size;
4. predicted: compute + comm, comm = bytes / bandwidth + collectives x latency (no overlap: gloo on a CPU moves bytes with the cores that
   compute, so little hides) and compute + max(0, comm - compute) (full overlap), as bounds.

Each measurement is the median of ``--rounds`` after ``--warmup``; the architectures alternate.
Run it on an otherwise idle machine (it uses 2 cores)::

    python benchmarks/fsdp_communication.py                    # width 128, 4 layers, 4 x 512 tokens per rank
    python benchmarks/fsdp_communication.py --out docs/fsdp.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from mot.config import ModelConfig  # noqa: E402
from mot.model.transformer import build_model  # noqa: E402
from mot.train.bench import architecture_config, interleaved_modalities  # noqa: E402
from mot.train.communication import (bytes_per_step, collectives_per_step, counting_sent_bytes,  # noqa: E402
                                     sharding)
from mot.train.distributed import DistributedContext, shard_model  # noqa: E402

ARCHITECTURES = ("dense", "mot", "moe4x")
MODALITIES = ["text", "image"]


def configs(args) -> dict:
    base = ModelConfig(vocab_size=args.vocab, d_model=args.width, n_layers=args.layers, n_heads=args.width // 32,
                       max_seq_len=args.seq, modalities=MODALITIES)
    return {a: architecture_config(base, a, MODALITIES) for a in ARCHITECTURES}


def batch(args, seed: int):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, args.vocab, (args.rows, args.seq), generator=generator)
    return tokens, interleaved_modalities(args.rows, args.seq, len(MODALITIES), random.Random(seed))


def step(model, tokens, modalities) -> None:
    model(tokens, modalities).logits.float().logsumexp(-1).mean().backward()
    model.zero_grad(set_to_none=True)


def timed(function, rounds: int, warmup: int) -> list:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def _ranks(rank, port, args, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # the link: every rank sends half of a gathered tensor of --link-mb megabytes
        shard = torch.ones(args.link_mb * 2 ** 20 // 8)  # fp32: half the gathered bytes per rank
        whole = torch.empty(2 * shard.numel())
        gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # torch >= 2.12
        gather = timed(lambda: gather_into(whole, shard), args.rounds, args.warmup)
        one, two = torch.ones(1), torch.empty(2)
        latency = timed(lambda: gather_into(two, one), 10 * args.rounds, args.warmup)
        models = {}
        for label, config in configs(args).items():
            torch.manual_seed(0)
            models[label] = shard_model(build_model(config), DistributedContext(rank, 2, torch.device("cpu")))
        tokens, modalities = batch(args, seed=rank)
        steps = {label: [] for label in models}
        sent = {}
        for label, model in models.items():  # an untimed step, its bytes counted
            with counting_sent_bytes() as counter:
                step(model, tokens, modalities)
            sent[label] = counter.bytes
        for _ in range(args.warmup):
            for model in models.values():
                step(model, tokens, modalities)
        for _ in range(args.rounds):
            for label, model in models.items():
                dist.barrier()
                start = time.perf_counter()
                step(model, tokens, modalities)
                dist.barrier()  # a step ends when both ranks are done
                steps[label].append(time.perf_counter() - start)
        if rank == 0:
            torch.save({"gather_seconds": gather, "latency_seconds": latency, "sent_bytes": shard.numel() * 4, "steps": steps,
                        "counted": sent}, out)
        dist.barrier()  # no rank tears gloo down while another still talks to it (else: SIGABRT at exit)
    finally:
        dist.destroy_process_group()


def measure_alone(args) -> dict:
    """Compute: one rank's batch, one thread, no sharding."""
    torch.set_num_threads(1)
    models = {}
    for label, config in configs(args).items():
        torch.manual_seed(0)
        models[label] = build_model(config)
    tokens, modalities = batch(args, seed=0)
    times = {label: [] for label in models}
    for _ in range(args.warmup):
        for model in models.values():
            step(model, tokens, modalities)
    for _ in range(args.rounds):
        for label, model in models.items():
            start = time.perf_counter()
            step(model, tokens, modalities)
            times[label].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=5101, help="the tiny corpus's vocabulary (default 5101)")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--rows", type=int, default=4, help="rows per rank (default 4)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--link-mb", type=int, default=64, help="megabytes gathered to time the link (default 64)")
    parser.add_argument("--out", help="also write every number as JSON")
    args = parser.parse_args()

    print(f"# FSDP2 communication model vs 2 gloo ranks; machine: {machine_info()}")
    alone = measure_alone(args)
    with tempfile.TemporaryDirectory() as scratch, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        out = Path(scratch) / "ranks.pt"
        mp.spawn(_ranks, args=(port, args, out), nprocs=2, join=True)
        ranks = torch.load(out)
    bandwidth = ranks["sent_bytes"] / statistics.median(ranks["gather_seconds"])
    latency = statistics.median(ranks["latency_seconds"])
    print(f"gloo all-gather, 2 ranks: {bandwidth / 1e9:.2f} GB/s sent per rank, {1e6 * latency:.0f} µs per collective")
    print("| architecture | parameters | MB sent per rank (predicted / counted) | compute alone | predicted, no overlap | "
          "predicted, full overlap | measured 2 ranks | measured - compute |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for label, config in configs(args).items():
        parts = sharding(config)
        sent = bytes_per_step(parts, 2, 4, 4)
        compute = statistics.median(alone[label])
        comm = sent / bandwidth + collectives_per_step(config) * latency
        measured = statistics.median(ranks["steps"][label])
        rows[label] = dict(parameters=parts.total, bytes=sent, counted_bytes=ranks["counted"][label], compute=compute,
                           communication=comm,
                           no_overlap=compute + comm, full_overlap=max(compute, comm), measured=measured)
        print(f"| {label} | {parts.total:,} | {sent / 1e6:.2f} / {ranks['counted'][label] / 1e6:.2f} | "
              f"{1000 * compute:.0f} ms | "
              f"{1000 * (compute + comm):.0f} ms | {1000 * max(compute, comm):.0f} ms | {1000 * measured:.0f} ms | "
              f"{1000 * (measured - compute):.0f} ms |")
    for label in ("mot", "moe4x"):
        print(f"{label}/dense: measured {rows[label]['measured'] / rows['dense']['measured']:.3f}, "
              f"predicted (no overlap) {rows[label]['no_overlap'] / rows['dense']['no_overlap']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine_info(), "settings": vars(args),
                                              "bandwidth": bandwidth, "latency": latency, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
