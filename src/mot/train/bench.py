"""``mot bench``: training-step throughput of dense, MoT and MoE-4x at equal FLOPs per token.

Each architecture is the given model config with that architecture's towers and MoE (as
``architecture=`` sets them in a recipe), over the first ``modalities`` of text, image, speech. One
step is a forward over a batch of interleaved sequences (text runs of 20-300 tokens, 256-token
image spans, speech runs of 50-250), the summed cross-entropy against random targets, the backward
and an AdamW step. The architectures run in one process, round-robin, after warm-up steps, so the
machine's noise falls on all of them alike; the median step gives tokens per second, achieved
FLOP/s (the model's training FLOPs per token, ``model/accounting.py``, times tokens per second) and
the model FLOPs utilisation against the device's peak where it is known.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..config import ConfigError, ModelConfig, check_number
from ..model import build_model
from ..model.accounting import flops_per_token
from ..runs.architecture import architecture_settings
from .bench_profile import profile_step

MODALITIES = ("text", "image", "speech")
ARCHITECTURES = ("dense", "mot", "moe4x")

#: dense bf16 tensor-core peak FLOP/s per GPU (vendors' data sheets, without sparsity), by a part of
#: the name torch reports; fp32 is not listed (its peak depends on TF32 settings)
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12}


def device_peak(name: str, bf16: bool) -> Optional[float]:
    """The peak FLOP/s of a device called ``name`` in bf16, if known (else ``None``: no MFU)."""
    if not bf16:
        return None
    return next((peak for part, peak in BF16_PEAK.items() if part in name), None)


def mfu(flops_per_second: float, peak: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation: achieved over peak FLOP/s (``None`` without a peak)."""
    return None if not peak else flops_per_second / peak


@dataclass
class BenchSettings:
    """What ``mot bench`` measures: ``model`` (sizes; its architecture fields are replaced per
    architecture), sequences of ``seq`` tokens in batches of ``batch`` over ``modalities`` modalities."""

    model: ModelConfig = field(default_factory=ModelConfig)
    seq: int = 2048
    batch: int = 2
    modalities: int = 2
    architectures: List[str] = field(default_factory=lambda: list(ARCHITECTURES))
    device: str = "cpu"
    bf16: bool = False
    compile: bool = False
    rounds: int = 10  # timed steps per architecture
    warmup: int = 2  # untimed steps first
    seed: int = 0
    peak_flops: Optional[float] = None  # FLOP/s of the device, when it is not in BF16_PEAK
    profile_dir: Optional[Path] = None  # one more profiled step per architecture (bench_profile.py)

    def __post_init__(self) -> None:
        for name in ("seq", "batch", "rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if not 1 <= self.modalities <= len(MODALITIES):
            raise ConfigError(f"modalities={self.modalities}: must be 1, 2 or 3 (text, image, speech)")
        unknown = [a for a in self.architectures if a not in ARCHITECTURES]
        if unknown or not self.architectures:
            raise ConfigError(f"architectures: {unknown or 'none'}: choose from {list(ARCHITECTURES)}")
        if self.peak_flops is not None:
            check_number("peak_flops", self.peak_flops, "must be a number > 0 (FLOP/s)", lambda v: v > 0)
        if self.profile_dir is not None:
            self.profile_dir = Path(self.profile_dir)
            if self.profile_dir.exists() and not self.profile_dir.is_dir():
                raise ConfigError(f"profile_dir={self.profile_dir}: exists and is not a directory")
        if self.seq > self.model.max_seq_len:
            raise ConfigError(f"seq={self.seq}: longer than the model's max_seq_len={self.model.max_seq_len}")


@dataclass
class BenchResult:
    architecture: str
    parameters: int
    flops_per_token: float  # training FLOPs per token
    step_ms: List[float] = field(default_factory=list)
    peak_memory_bytes: Optional[int] = None  # CUDA only

    def summary(self, tokens_per_step: int, peak: Optional[float]) -> dict:
        median = statistics.median(self.step_ms)
        tokens_per_second = tokens_per_step / (median / 1e3)
        achieved = self.flops_per_token * tokens_per_second
        return dict(architecture=self.architecture, parameters=self.parameters, flops_per_token=self.flops_per_token,
                    median_step_ms=median, tokens_per_second=tokens_per_second, flops_per_second=achieved,
                    mfu=mfu(achieved, peak), peak_memory_bytes=self.peak_memory_bytes, step_ms=self.step_ms)


def interleaved_modalities(batch: int, seq: int, modalities: int, rng: random.Random) -> torch.Tensor:
    """Modality ids ``[B, L]``: text runs of 20-300 tokens, 256-token image spans, speech runs of
    50-250, the next run always of the modality with the fewest tokens so far (about balanced)."""
    lengths = {0: lambda: rng.randint(20, 300), 1: lambda: 256, 2: lambda: rng.randint(50, 250)}
    rows = []
    for _ in range(batch):
        row: List[int] = []
        counts = [0] * modalities
        while len(row) < seq:
            fewest = min(counts)
            modality = rng.choice([m for m in range(modalities) if counts[m] == fewest])
            run = lengths[modality]()
            row += [modality] * run
            counts[modality] += run
        rows.append(row[:seq])
    return torch.tensor(rows)


def architecture_config(model: ModelConfig, architecture: str, modalities: Sequence[str]) -> ModelConfig:
    """``model`` over ``modalities`` with the towers and MoE of ``architecture``."""
    fields = dict(vars(model))
    fields.update(modalities=list(modalities), **architecture_settings(architecture, modalities))
    return ModelConfig(**fields)


def run_bench(settings: BenchSettings, log=print) -> dict:
    """Time every architecture's training step, round-robin; returns every number (see the module)."""
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch.cuda.is_available() is False")
    names = MODALITIES[:settings.modalities]
    rng = random.Random(settings.seed)
    modality_ids = interleaved_modalities(settings.batch, settings.seq, settings.modalities, rng).to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    vocab = settings.model.vocab_size
    tokens = torch.randint(0, vocab, (settings.batch, settings.seq), generator=generator).to(device)
    targets = torch.randint(0, vocab, (settings.batch, settings.seq), generator=generator).to(device)
    dtype = torch.bfloat16 if settings.bf16 else torch.float32
    runs, results = [], []
    for architecture in settings.architectures:
        config = architecture_config(settings.model, architecture, names)
        torch.manual_seed(settings.seed)
        model = build_model(config, device=device).to(dtype)
        plan = model.plan_for(modality_ids)  # on the host, outside the timed step, as the loader does
        forward = torch.compile(model) if settings.compile else model
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        counts = flops_per_token(config, settings.seq)
        result = BenchResult(architecture, sum(p.numel() for p in model.parameters()), counts.training)
        runs.append((result, model, forward, plan, optimizer))
        results.append(result)

    def step(model, forward, plan, optimizer) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        logits = forward(tokens, modality_ids, plan=plan).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="sum")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3

    for round_index in range(settings.warmup + settings.rounds):
        timed = round_index >= settings.warmup
        this_round = []
        for result, model, forward, plan, optimizer in runs:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            elapsed = step(model, forward, plan, optimizer)
            if device.type == "cuda":
                result.peak_memory_bytes = max(result.peak_memory_bytes or 0, torch.cuda.max_memory_allocated())
            if timed:
                result.step_ms.append(elapsed)
            this_round.append(f"{result.architecture}={elapsed:.0f}ms")
        log(f"{'step' if timed else 'warm-up'} {round_index + 1}/{settings.warmup + settings.rounds}: "
            + " ".join(this_round))
    if settings.profile_dir is not None:
        for result, model, forward, plan, optimizer in runs:
            table = profile_step(lambda: step(model, forward, plan, optimizer), device, settings.profile_dir,
                                 result.architecture)
            log(f"profiled one step of {result.architecture}: {table}")
    peak = settings.peak_flops or (device_peak(torch.cuda.get_device_name(), settings.bf16)
                                   if device.type == "cuda" else None)
    tokens_per_step = settings.batch * settings.seq
    summaries = [r.summary(tokens_per_step, peak) for r in results]
    dense = next((s for s in summaries if s["architecture"] == "dense"), None)
    for summary in summaries:
        summary["step_vs_dense"] = summary["median_step_ms"] / dense["median_step_ms"] if dense else None
    return dict(modalities=list(names), seq=settings.seq, batch=settings.batch, device=settings.device,
                bf16=settings.bf16, compile=settings.compile, peak_flops=peak,
                tokens_per_modality={n: int((modality_ids == i).sum()) for i, n in enumerate(names)},
                results=summaries)


def markdown(report: dict) -> str:
    """The report as a markdown table."""
    lines = [f"{report['batch']} x {report['seq']} tokens of {', '.join(report['modalities'])} "
             f"({report['tokens_per_modality']}), {report['device']}{' bf16' if report['bf16'] else ''}"
             f"{' compiled' if report['compile'] else ''}", "",
             "| architecture | parameters | training FLOPs/token | step (median) | vs dense | tokens/s | "
             "achieved FLOP/s | MFU | peak memory |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        memory = f"{r['peak_memory_bytes'] / 2**30:.2f} GiB" if r["peak_memory_bytes"] else "-"
        versus = "-" if r["step_vs_dense"] is None else f"{r['step_vs_dense']:.3f}x"
        utilisation = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['architecture']} | {r['parameters']:,} | {r['flops_per_token']:,.0f} | "
                     f"{r['median_step_ms']:.1f} ms | {versus} | {r['tokens_per_second']:,.0f} | "
                     f"{r['flops_per_second'] / 1e12:.3f} T | {utilisation} | {memory} |")
    return "\n".join(lines)
