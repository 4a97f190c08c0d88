"""Shared test helpers: small configs, realistic interleaved batches, a recorder of the aten ops
a piece of code runs, and the process group of a spawned gloo rank."""

from __future__ import annotations

import contextlib
import os
import random
import sys

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

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


def prepare_corpus_with_words(directory, documents: int):
    """:func:`prepare_small_corpus` plus ``documents`` text-only documents (the source ``words``): a
    rank that sees no image, a text-only validation loss."""
    import json

    words = directory / "words.jsonl"
    words.write_text("".join(json.dumps({"id": f"w{i}", "segments": [{"type": "text", "text": f"plain words {i} " * 6}]})
                             + "\n" for i in range(documents)))
    return prepare_small_corpus(directory, jsonl=[str(words)])


def small_llama_config(**overrides):
    """A small ``transformers.LlamaConfig`` (``overrides`` of its fields)."""
    import transformers

    settings = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 500.0}, tie_word_embeddings=False)
    return transformers.LlamaConfig(**{**settings, **overrides})


def random_llama(**overrides):
    """A randomly initialised Llama of :func:`small_llama_config` (offline) with norm weights far from
    1, so the norms are really compared; eager attention, the reference: no fused kernel."""
    import transformers

    config = small_llama_config(**overrides)
    config._attn_implementation = "eager"
    llama = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in llama.parameters():
            if parameter.dim() == 1:
                parameter.uniform_(0.5, 1.5)
    return llama


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


def tone_utterances(count, seed=0, segments=6):
    """``count`` 16 kHz "utterances" of ``segments`` 0.2 s tones (frequencies from a set of six,
    with a harmonic): speech-like enough for the unit tokenizer and the vocoder to learn, and
    needing no speech engine."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(3200) / 16_000
    frequencies = [220.0, 330.0, 440.0, 660.0, 880.0, 1320.0]
    audios = []
    for _ in range(count):
        parts = [0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(4 * np.pi * f * t)
                 for f in rng.choice(frequencies, size=segments)]
        audios.append(np.concatenate(parts).astype(np.float32))
    return audios


def tone_speech(num_units=12, steps=40):
    """A unit tokenizer and a unit vocoder fitted on :func:`tone_utterances` (seconds on a CPU)."""
    from mot.tokenizers.speech_units import SpeechUnitTokenizer
    from mot.tokenizers.speech_vocoder import VocoderTraining, fit_vocoder

    audios = tone_utterances(24)
    units = SpeechUnitTokenizer().fit(audios, 16_000, num_units=num_units, seed=0, log=lambda _: None)
    vocoder = fit_vocoder(units, audios, VocoderTraining(steps=steps, batch_size=8, crop_frames=32),
                          log=lambda _: None)
    return units, vocoder


#: aten ops that read a value on the host or have data-dependent output shapes
SYNCING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "masked_scatter", "item", "unique",
               "_unique2", "equal", "is_nonzero"}


class RecordOps(TorchDispatchMode):
    """Records every aten op run under it: names, the ones that write into a tensor, boolean indexing."""

    def __init__(self):
        super().__init__()
        self.names = []
        self.mutating = []  # ops that write into an existing tensor (in place or out=)
        self.bool_indexing = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.names.append(name)
        if func._schema.is_mutable:
            self.mutating.append(name)
        if name in ("index", "index_put", "index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
            self.bool_indexing = True
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def gloo_rank(rank: int, world_size: int, **init):
    """Run a spawned worker's body inside a gloo process group of ``world_size`` ranks.

    On success every rank waits for the others, the group is destroyed and the process leaves with
    ``os._exit(0)``: gloo's C++ threads can outlive ``destroy_process_group`` and, if the interpreter
    is finalised under them, abort the worker (SIGABRT) after its work passed (torch's fix, pytorch
    PR 179291, was abandoned). A failing body raises as usual, so the parent reports its traceback.
    Only for processes the test spawned: in pytest's own process it would end the session."""
    dist.init_process_group("gloo", rank=rank, world_size=world_size, **init)
    try:
        yield
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
