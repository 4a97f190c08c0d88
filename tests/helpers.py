"""Shared test helpers: small configs and realistic interleaved batches."""

from __future__ import annotations

import random

import torch

from mot import ModelConfig


def tiny_config(**overrides) -> ModelConfig:
    """A model small enough for exhaustive CPU tests (fp32)."""
    base = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, max_seq_len=128)
    base.update(overrides)
    return ModelConfig(**base)


def interleaved_modalities(batch: int, length: int, num_modalities: int, seed: int,
                           absent: tuple[int, ...] = ()) -> torch.Tensor:
    """``[B, L]`` modality ids made of runs (text runs, image and speech spans), like real data."""
    rng = random.Random(seed)
    present = [m for m in range(num_modalities) if m not in absent]
    rows = []
    for _ in range(batch):
        row: list[int] = []
        while len(row) < length:
            row += [rng.choice(present)] * rng.randint(1, max(2, length // 3))
        rows.append(row[:length])
    return torch.tensor(rows)


def random_batch(config: ModelConfig, batch: int = 3, length: int = 24, seed: int = 0,
                 absent: tuple[int, ...] = ()):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, config.vocab_size, (batch, length), generator=generator)
    modalities = interleaved_modalities(batch, length, len(config.modalities), seed, absent)
    return tokens, modalities
