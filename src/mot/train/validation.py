"""The validation loss of a recipe's model: the batches it is measured on and how they are summed.

One definition for the trainer's periodic evaluation and for ``mot eval``, so that a checkpoint
evaluated later reproduces the loss its run logged, bit for bit: the first ``data.valid_batches``
batches of each validation split, read by a loader seeded with the run's seed (rank ``r`` of
``w`` reads its own share), each scored by the setting's objective (``objective.py``), and
summed per modality in float32 before the (all-reduced) sums are divided by the counts.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..data.packing import PackedBatch
from ..data.settings import Corpus
from ..runs.recipe import TrainConfig

Run = Callable[[dict], object]


def split_loader(corpus: Corpus, config: TrainConfig, split: str, seed: int, rank: int = 0, world_size: int = 1):
    """The loader of ``split`` as a run of ``config`` reads it (captions are dropped, for
    classifier-free guidance, in Transfusion training batches only)."""
    data = config.data
    dropout = config.diffusion.caption_dropout if data.setting == "transfusion" and split == "train" else 0.0
    return corpus.loader(data.setting, split, seq_len=data.seq_len, batch_rows=data.batch_rows,
                         modality_tower_index=config.model.modality_tower_index, seed=seed, rank=rank,
                         world_size=world_size, weights=data.weights,
                         latent_patch_size=config.model.latent.patch_size, caption_dropout=dropout)


def validation_batches(corpus: Corpus, config: TrainConfig, split: str, rank: int = 0,
                       world_size: int = 1) -> List[PackedBatch]:
    """The batches of ``split`` the validation loss is measured on."""
    loader = split_loader(corpus, config, split, seed=config.seed, rank=rank, world_size=world_size)
    return [next(loader) for _ in range(config.data.valid_batches)]


def loss_sums(objective, run: Run, batches: Sequence[PackedBatch], num_modalities: int,
              device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(sums, counts)``, each ``[M]`` float32: the objective's validation loss summed per modality
    over ``batches`` (moved to ``device``), and what each sum is divided by."""
    sums = torch.zeros(num_modalities, device=device)
    counts = torch.zeros(num_modalities, device=device)
    for index, batch in enumerate(batches):
        loss = objective.validation_loss(run, to_device(batch, device), index)
        sums += loss.sum_per_modality
        counts += loss.count_per_modality.to(counts.dtype)
    return sums, counts


def per_modality(modalities: Sequence[str], sums: torch.Tensor, counts: torch.Tensor) -> Dict[str, Optional[float]]:
    """Modality -> mean loss (``None`` for a modality without any counted position)."""
    return {m: (float(s) / float(c) if c > 0 else None) for m, s, c in zip(modalities, sums.tolist(), counts.tolist())}


def to_device(batch: PackedBatch, device: torch.device) -> PackedBatch:
    """``batch`` with its tensors and routing plan on ``device``."""
    if device.type == "cpu":
        return batch
    moved = {field.name: value.to(device, non_blocking=True) for field in dataclasses.fields(batch)
             if isinstance(value := getattr(batch, field.name), torch.Tensor)}
    return dataclasses.replace(batch, **moved, plan=batch.plan.to(device))
