"""A trained Transfusion run as a text -> image and image -> text pipeline: the sampler of
:mod:`.transfusion` with the corpus's text tokenizer (BPE) and image VAE around it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from ..model.transformer import MoTModel
from ..tokenizers.image_common import tensor_to_uint8
from ..tokenizers.image_vae import ImageVAE
from ..tokenizers.text import BPETokenizer
from ..tokenizers.vocab import VocabLayout
from .decoding import Request
from .logits import Sampling
from .run_assets import load_generation_run, tokenizer_directory
from .transfusion import ImageSampling, SamplingError, TransfusionSampler, latent_shape_of


class TransfusionPipeline:
    """``text_to_image(prompts)`` -> ``uint8 [N, S, S, 3]``; ``image_to_text(images)`` -> captions."""

    def __init__(self, model: MoTModel, layout: VocabLayout, text: BPETokenizer, vae: ImageVAE,
                 train_steps: int = 1000, schedule: str = "cosine", corpus_dir: Optional[Path] = None,
                 objective: str = "ddpm"):
        self.text, self.vae, self.layout = text, vae, layout
        self.corpus_dir = corpus_dir  # the prepared corpus the tokenizers come from, when known
        self.sampler = TransfusionSampler(model, layout, vae.config.latent_shape, train_steps, schedule, objective)

    @property
    def model(self) -> MoTModel:
        """The model the sampler denoises and captions with."""
        return self.sampler.model

    @classmethod
    def from_run(cls, run_dir: str | Path, log=print, step: Optional[int] = None) -> "TransfusionPipeline":
        """The checkpoint of ``step`` (default: the newest complete one) of a Transfusion-setting
        run, with its corpus's tokenizers (checked against the fingerprints the run was trained with)."""
        config, model, corpus = load_generation_run(run_dir, ("transfusion",), "text -> image by diffusion", log,
                                                    step)
        text = BPETokenizer.load(tokenizer_directory(corpus, "text", "text"))
        vae = ImageVAE.load(tokenizer_directory(corpus, "image_vae", "diffusion")).eval()
        if tuple(vae.config.latent_shape) != latent_shape_of(corpus.manifest):
            raise SamplingError(f"{corpus.directory}: the VAE's latents {vae.config.latent_shape} are not the shards'")
        diffusion = config.diffusion
        return cls(model, corpus.layout("transfusion"), text, vae, diffusion.train_steps, diffusion.schedule,
                   corpus.directory, diffusion.objective)

    def encode_text(self, prompt: str) -> List[int]:
        return self.layout.to_global("text", np.array(self.text.encode(prompt), dtype=np.int64)).tolist()

    def decode_text(self, ids: Sequence[int]) -> str:
        return self.text.decode(self.layout.to_local("text", np.array(ids, dtype=np.int64)).tolist())

    def text_to_image(self, prompts: Sequence[str], sampling: ImageSampling = ImageSampling(),
                      log: Optional[Callable[[str], None]] = None, seeds: Optional[Sequence[int]] = None) -> np.ndarray:
        """Images ``uint8 [N, S, S, 3]`` for ``prompts``; an empty prompt is refused, since it would
        silently draw the unconditional image that guidance subtracts. ``log`` receives progress.
        ``seeds`` (one per prompt): each image is the one its prompt gives alone with that seed."""
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise SamplingError(f"prompts[{index}]={prompt!r}: a prompt must hold some text")
        latents = self.sampler.text_to_image([self.encode_text(p) for p in prompts], sampling, log=log, seeds=seeds)
        return tensor_to_uint8(self.vae.decode(latents.to(self.vae.device))).cpu().numpy()

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """``images`` (``uint8 [N, S, S, 3]``) through the VAE and back: the best any sample can be."""
        return tensor_to_uint8(self.vae.decode(self.vae.encode(images))).cpu().numpy()

    def image_to_text(self, images: np.ndarray | torch.Tensor, max_new_tokens: int = 40,
                      temperature: float = 0.0, seed: int = 0) -> List[str]:
        """A caption for each image (``uint8 [N, S, S, 3]``), greedy unless ``temperature`` > 0."""
        latents = self.vae.encode(images)
        captions = self.sampler.image_to_text(latents, max_new_tokens, temperature, seed)
        return [self.decode_text(c) for c in captions]

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 64,
                 sampling: Sampling = Sampling(temperature=1.0)) -> List[str]:
        """Each text continued with text only (prompt ``i`` samples with seed ``sampling.seed + i``)."""
        requests = [self.completion_request(p, max_new_tokens, sampling.for_request(i))
                    for i, p in enumerate(prompts)]
        return [self.decode_text(g.tokens) for g in self.sampler.decoder().generate(requests)]

    def completion_request(self, prompt: str, max_new_tokens: int, sampling: Sampling) -> Request:
        """The decoding request of one text completion: ``<bos>`` and the text, then text only."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise SamplingError(f"prompt={prompt!r}: a prompt must hold some text")
        return Request([self.layout.special("<bos>"), *self.encode_text(prompt)], mode="text",
                       max_new_tokens=max_new_tokens, sampling=sampling)
