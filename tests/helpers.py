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


#: a prepared corpus that needs no apt package and takes seconds: ShapeScenes only (their
#: captions train the BPE), a near-untrained VQ and VAE (so every setting has its shards), a held-out split
SMALL_CORPUS = dict(shapescenes=24, digits=0, text_documents=0, text_vocab=300, vq_steps=2, vq_batch_size=8,
                    image_tokenizers=["vq", "vae"], vae_steps=2, vae_batch_size=8,
                    shapescenes_heldout=4, valid_fraction=0.2)


def prepare_small_corpus(directory, **overrides):
    """Prepare :data:`SMALL_CORPUS` (with ``overrides``) into ``directory``; returns it."""
    from mot.data.prepare import PrepareConfig, prepare

    prepare(PrepareConfig(out_dir=str(directory), **{**SMALL_CORPUS, **overrides}), log=lambda _: None)
    return directory


def small_transfusion_recipe(corpus, runs, **overrides):
    """:func:`small_recipe` in the Transfusion setting: a linear patch encoder, 2x2 patches."""
    settings = {"data.setting": "transfusion", "model.latent.encoder": "linear", "name": "transfusion"}
    settings.update(overrides)
    return small_recipe(corpus, runs, **settings)


def small_recipe(corpus, runs, **overrides):
    """A training recipe for :func:`prepare_small_corpus`: a 2-layer, 32-wide model, 10 steps of
    2 micro-batches of 2 x 96 tokens, deterministic, logging every step."""
    from mot.runs.recipe import load_recipe

    settings = {"name": "run", "out_dir": str(runs), "data.corpus": str(corpus), "data.seq_len": 96,
                "data.batch_rows": 2, "data.grad_accum": 2, "data.valid_batches": 1,
                "data.valid_splits": "[valid,heldout]", "model.d_model": 32, "model.n_layers": 2,
                "model.n_heads": 4, "model.max_seq_len": 128, "optim.lr": 1e-2, "optim.warmup_steps": 2,
                "optim.total_steps": 10, "steps": 10, "log_every": 1, "eval_every": 4, "checkpoint_every": 3,
                "deterministic": True, "keep_last": 5}
    settings.update(overrides)
    return load_recipe(None, [f"{k}={v}" for k, v in settings.items()])


def experiment_recipe(corpus, out, transfusion: bool = False, steps: int = 4):
    """Write ``out/recipe.yaml``: a 2-layer, 32-wide recipe on :func:`prepare_small_corpus` for
    ``mot compare`` tests (the Transfusion setting with a linear patch encoder if asked)."""
    setting = ", setting: transfusion" if transfusion else ""
    latent = ", latent: {encoder: linear}" if transfusion else ""
    recipe = out / "recipe.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(f"""name: run
data: {{corpus: {corpus}{setting}, seq_len: 96, batch_rows: 2, valid_batches: 1}}
model: {{d_model: 32, n_layers: 2, n_heads: 4, max_seq_len: 96{latent}}}
optim: {{lr: 1.0e-2, warmup_steps: 1, total_steps: '${{steps}}'}}
steps: {steps}
log_every: 1
eval_every: 2
checkpoint_every: 2
""")
    return recipe
