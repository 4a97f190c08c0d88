"""The training loop: one recipe -> a run directory with metrics and checkpoints.

A step reads ``grad_accum`` micro-batches, counts what the loss is normalised by over the whole
global batch first (trained positions; in the Transfusion setting also images; one all-reduce),
and backpropagates each micro-batch's summed loss divided by those counts, so the update is the
same however the global batch is split over micro-batches and ranks. What is optimised is the
setting's objective (``objective.py``): next-token loss, or Transfusion's ``LM + 5 x diffusion``.
Before the optimizer update the guard checks that every modality's loss and the gradient norm
are finite on every rank; if not, the step stops with the modality named and nothing is updated
or saved. With ``spike_skip`` a step whose loss is far above its recent mean is skipped (logged).
A run that starts at step 0 takes its first weights from ``init`` when it names a source (a warm
start, ``runs/warm_start.py``); ``freeze`` keeps towers as they are (``freezing.py``).

Exact resume (docs/design.md invariant 6): a checkpoint holds the model, the optimizer, the step, the
loader's position and every RNG, per rank; the learning rate is a function of the step, and
diffusion noise comes from generators keyed by seed, step, rank and micro-batch. Resumed in
deterministic mode on a CPU, the losses continue bit for bit.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..data.packing import PackedBatch
from ..io import CheckpointError
from ..model.accounting import flops_per_token
from ..model.transformer import MoTModel, build_model
from ..runs.checkpoints import CheckpointManager, load_model_optimizer_state, model_optimizer_state
from ..runs.recipe import TrainConfig
from ..runs.resolve import resolve_recipe
from ..data.prepare.fingerprints import stage_fingerprints
from ..runs.fingerprints import weights_fingerprint, write_fingerprints
from ..runs.run_dir import check_run_dir, environment_facts, prepare_run_dir, write_environment
from ..runs.warm_start import warm_start
from .distributed import DistributedContext, all_reduce_sum, barrier, init_distributed, shard_model
from .errors import TrainingError
from .freezing import FrozenTowers
from .metrics import MetricsLogger
from .objective import make_objective
from .optim import build_optimizer, clip_gradients, learning_rate
from .rng import capture_rng_state, restore_rng_state
from .validation import loss_sums, per_modality, split_loader, to_device, validation_batches

#: dense bf16 peak of known GPUs, for MFU (FLOP/s)
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


@dataclass
class StepResult:
    """What one optimizer step measured (summed over ranks)."""

    loss_sums: torch.Tensor  # [M] fp32: summed loss per modality (Transfusion images: diffusion)
    loss_counts: torch.Tensor  # [M]: trained positions (Transfusion images: images) per modality
    tokens: torch.Tensor  # [M]: input tokens per modality (padding excluded)
    grad_norm: float
    skipped: bool
    #: the objective's loss (next-token mean, or LM + weight x diffusion)
    loss: float


class Trainer:
    """Builds everything a recipe names, resumes from the newest good checkpoint, and trains."""

    def __init__(self, config: TrainConfig, context: Optional[DistributedContext] = None,
                 log: Callable[[str], None] = print, train_loader=None):
        self.context = context or init_distributed(config.device)
        self._log = log if self.context.is_main else (lambda _: None)
        config, self.corpus = resolve_recipe(config)
        self.config, self.layout = config, self.corpus.layout(config.data.setting)
        if config.deterministic:
            torch.use_deterministic_algorithms(True)  # for the whole process, as the recipe asks
        check_run_dir(config)
        self.run_dir = config.run_dir

        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", config.keep_last, config.keep_every)
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        model = build_model(config.model, self.context.device)
        if config.init.source and not self.checkpoints.steps() and not self.checkpoints.damaged():
            warm_start(model, config.init, self.layout, self._log)  # a run that resumes reads its checkpoint
        self.frozen = FrozenTowers(model, config.freeze, self.layout)  # before the optimizer: it skips them
        if config.activation_checkpointing:
            _checkpoint_blocks(model)
        if self.context.distributed:
            shard_model(model, self.context)
        self.model: MoTModel = model
        self.forward = torch.compile(model) if config.compile else model
        self.optimizer = build_optimizer(model, config.optim)
        # each rank its own stream from here on (data order is the loader's, seeded separately)
        torch.manual_seed(config.seed * 1_000_003 + self.context.rank + 1)
        self.modalities = list(config.model.modalities)
        self.objective = make_objective(config, self.modalities, self.context.rank)
        self.loader = train_loader or self._loader("train", config.seed)
        self.step = 0
        self.recent_losses: collections.deque = collections.deque(maxlen=config.spike_skip.window)
        self.flops_per_token = flops_per_token(config.model, config.data.seq_len).training
        self._valid_batches: Dict[str, List[PackedBatch]] = {}
        self.resume()
        if self.context.is_main:  # only now: a run that cannot start leaves the directory as it was
            prepare_run_dir(config)
        barrier(self.context)

    # ------------------------------------------------------------------ set-up --

    def _loader(self, split: str, seed: int):
        return split_loader(self.corpus, self.config, split, seed, self.context.rank, self.context.world_size)

    def _autocast(self):
        device = self.context.device.type
        bf16 = self.config.precision == "bf16" or (self.config.precision == "auto" and device == "cuda")
        return torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def resume(self) -> None:
        """Load the newest complete, verified checkpoint, if any; report the ones passed over.

        Damaged checkpoints are moved aside into ``checkpoints/damaged/``, never overwritten or
        pruned. If the run has damaged ones and no good one, raise :class:`CheckpointError`
        before anything else in the run directory is written: training from step 0 would
        rewrite its metrics, and starting over is the user's decision to make."""
        path, problems = self.checkpoints.latest(set_aside_damaged=True)
        for problem in problems:
            self._log(f"checkpoint passed over: {problem}")
        if path is None:
            damaged = self.checkpoints.damaged()
            if damaged:
                raise CheckpointError(
                    f"{self.checkpoints.directory} holds no good checkpoint to resume from: the damaged ones are "
                    f"kept, moved aside to {', '.join(str(p) for p in damaged)}, and nothing else in "
                    f"{self.run_dir} was changed. To resume, put a good copy of a checkpoint back into "
                    f"{self.checkpoints.directory}; to train from step 0, delete or rename {self.run_dir} "
                    f"(after copying what you need from it) or train with another name=")
            return
        state = model_optimizer_state(self.model, self.optimizer)
        per_rank = self.checkpoints.load(path, state)
        # every tokenizer the run was trained with must be unchanged; what a rerun of `mot prepare` added
        # since (a vocoder, the evaluation feature network) changes no token
        corpus_fingerprints = self.corpus.fingerprints()
        if any(corpus_fingerprints.get(name) != value for name, value in per_rank["tokenizers"].items()):
            raise TrainingError(f"{path} was trained on a corpus with tokenizers {per_rank['tokenizers']}, but "
                                f"{self.config.data.corpus} has {corpus_fingerprints}")
        load_model_optimizer_state(self.model, self.optimizer, state)
        self.loader.load_state_dict(per_rank["loader"])
        restore_rng_state(per_rank["rng"])
        self.step = int(per_rank["step"])
        self.recent_losses.extend(per_rank["recent_losses"])
        self._log(f"resumed from {path} at step {self.step}")

    def save(self) -> Path:
        per_rank = {"step": self.step, "loader": self.loader.state_dict(), "rng": capture_rng_state(),
                    "recent_losses": list(self.recent_losses), "tokenizers": self.corpus.fingerprints()}
        return self.checkpoints.save(self.step, model_optimizer_state(self.model, self.optimizer), per_rank)

    # ------------------------------------------------------------------ one step --

    def train_step(self) -> StepResult:
        """Run one optimizer step (or stop it: see the module docstring) and return what it measured."""
        micro_batches = [next(self.loader) for _ in range(self.config.data.grad_accum)]
        normalisers = self.objective.normalisers(micro_batches).to(self.context.device)
        normalisers = all_reduce_sum(normalisers, self.context).cpu()
        modalities = len(self.modalities)
        sums = torch.zeros(modalities, device=self.context.device)
        counts = torch.zeros(modalities, device=self.context.device)
        tokens = torch.zeros(modalities, dtype=torch.int64)
        self.model.train()
        for micro, batch in enumerate(micro_batches):
            tokens += torch.bincount(batch.modality_ids[batch.document_ids >= 0], minlength=modalities)
            batch = to_device(batch, self.context.device)
            inputs, extra = self.objective.model_inputs(batch, (self.config.seed, self.step, self.context.rank, micro))
            with self._autocast():
                output = self.forward(**inputs)
            loss = self.objective.loss(output, batch, extra)
            self.objective.to_backpropagate(loss, normalisers, self.context.world_size).backward()
            sums += loss.sum_per_modality.detach()
            counts += loss.count_per_modality.detach().to(counts.dtype)
        all_reduce_sum(sums, self.context)
        all_reduce_sum(counts, self.context)
        self.frozen.zero_frozen_rows()
        grad_norm = float(clip_gradients(self.model, self.config.optim.grad_clip))  # the step's one host sync
        sums, counts = sums.cpu(), counts.cpu()
        result = StepResult(sums, counts, tokens, grad_norm, skipped=False, loss=self.objective.total(sums, counts))
        self._guard(result)
        if self._is_spike(result.loss):
            result.skipped = True
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(self.step, self.config.optim) * group.get("lr_scale", 1.0)
            self.optimizer.step()
            self.recent_losses.append(result.loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return result

    def _guard(self, result: StepResult) -> None:
        """Stop before the update if a loss or the gradient is not finite (on any rank: the sums
        and the norm are already reduced over ranks)."""
        bad = [m for m, s in zip(self.modalities, result.loss_sums.tolist()) if not math.isfinite(s)]
        if bad or not math.isfinite(result.grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            what = (f"the {', '.join(bad)} loss is not finite" if bad else
                    f"the gradient norm is {result.grad_norm} (every modality's loss is finite)")
            raise TrainingError(f"step {self.step}: {what}; no update was made and the checkpoints are "
                                f"untouched (the newest is in {self.checkpoints.directory})")

    def _is_spike(self, loss: float) -> bool:
        spike = self.config.spike_skip
        if not spike.enabled or len(self.recent_losses) < spike.window:
            return False
        return loss > spike.factor * (sum(self.recent_losses) / len(self.recent_losses))

    # ------------------------------------------------------------------ evaluation --

    @torch.no_grad()
    def evaluate(self) -> Dict[str, Dict[str, Optional[float]]]:
        """Mean loss per modality on the same batches of every validation split (Transfusion images:
        the diffusion loss on a fixed grid of timesteps with fixed noise)."""
        self.model.eval()
        results = {}
        for split in self.config.data.valid_splits:
            if split not in self._valid_batches:
                self._valid_batches[split] = validation_batches(self.corpus, self.config, split, self.context.rank,
                                                                self.context.world_size)
            sums, counts = loss_sums(self.objective, self._run, self._valid_batches[split], len(self.modalities),
                                     self.context.device)
            all_reduce_sum(sums, self.context)
            all_reduce_sum(counts, self.context)
            results[split] = per_modality(self.modalities, sums, counts)
        self.model.train()
        return results

    def _run(self, inputs: dict):
        with self._autocast():
            return self.forward(**inputs)

    # ------------------------------------------------------------------ the loop --

    def train(self) -> Dict[str, object]:
        """Train until ``config.steps``; returns the last interval's and evaluation's numbers."""
        config = self.config
        if self.context.is_main:
            write_environment(self.run_dir, environment_facts(self.context.world_size, str(self.context.device)))
        self._log(f"run directory: {self.run_dir}")
        logger = MetricsLogger(self.run_dir, config.steps, resume_step=self.step, enabled=self.context.is_main,
                               description=config.name)
        interval: List[StepResult] = []
        seconds = 0.0  # in training steps only (evaluation and checkpoints excluded from tokens/s)
        last_train, last_valid = {}, {}
        # where another machine's run of this recipe parts from this one: corpus, initial weights, step 1
        fingerprinted = self.step == 0 and not self.context.distributed
        if fingerprinted:
            write_fingerprints(self.run_dir, {"corpus": stage_fingerprints(self.corpus.manifest),
                                              "initial_weights": weights_fingerprint(self.model)})
        try:
            while self.step < config.steps:
                started = time.perf_counter()
                interval.append(self.train_step())
                seconds += time.perf_counter() - started
                if fingerprinted and self.step == 1:
                    write_fingerprints(self.run_dir, {"weights_after_step_1": weights_fingerprint(self.model)})
                if interval[-1].skipped:
                    logger.message(f"step {self.step}: loss {interval[-1].loss:.4f} is a spike, update skipped")
                logger.advance()
                end = self.step == config.steps
                if self.step % config.log_every == 0 or end:
                    last_train = self._interval_record(interval, seconds)
                    logger.log(last_train, _console_line(last_train))
                    interval, seconds = [], 0.0
                if self.step % config.eval_every == 0 or end:
                    last_valid = {"step": self.step, "kind": "valid", "loss": self.evaluate()}
                    logger.log(last_valid, _console_line(last_valid))
                kept = config.keep_every and self.step % config.keep_every == 0
                if self.step % config.checkpoint_every == 0 or kept or end:
                    self.save()
        finally:
            logger.close()
        self._log(f"run directory: {self.run_dir}")
        return {"train": last_train, "valid": last_valid}

    def _interval_record(self, results: List[StepResult], seconds: float) -> Dict[str, object]:
        sums = torch.stack([r.loss_sums for r in results]).sum(0)
        counts = torch.stack([r.loss_counts for r in results]).sum(0)
        tokens = torch.stack([r.tokens for r in results]).sum(0)
        record = {"step": self.step, "kind": "train", "loss": self.objective.total(sums, counts),
                  "loss_per_modality": per_modality(self.modalities, sums, counts),
                  "grad_norm": results[-1].grad_norm, "lr": learning_rate(self.step - 1, self.config.optim),
                  "tokens_per_second": dict(zip(self.modalities, (float(t) / seconds for t in tokens.tolist()))),
                  "skipped_steps": sum(r.skipped for r in results), "seconds": seconds}
        if self.context.device.type == "cuda":
            total = float(tokens.sum()) / seconds
            peak = next((v for k, v in PEAK_FLOPS.items() if k in torch.cuda.get_device_name()), None)
            if peak is not None:
                record["mfu"] = total * self.flops_per_token / (peak * self.context.world_size)
            record["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        return record


def _console_line(record: Dict[str, object]) -> str:
    if record["kind"] == "valid":
        parts = [f"{split} " + " ".join(f"{m} {v:.3f}" for m, v in losses.items() if v is not None)
                 for split, losses in record["loss"].items()]
        return f"step {record['step']:>6} valid: " + "; ".join(parts)
    losses = " ".join(f"{m} {v:.3f}" for m, v in record["loss_per_modality"].items() if v is not None)
    rate = sum(record["tokens_per_second"].values())
    return (f"step {record['step']:>6} loss {record['loss']:.4f} ({losses}) grad {record['grad_norm']:.2f} "
            f"lr {record['lr']:.2e} {rate:,.0f} tok/s")


def _checkpoint_blocks(model: MoTModel) -> None:
    """Activation checkpointing: each block's activations are recomputed in the backward pass."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for index, block in enumerate(model.blocks):
        model.blocks[index] = checkpoint_wrapper(block)
