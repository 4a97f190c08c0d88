"""Sampling from a Transfusion-setting model: text -> image by denoising, image -> text by decoding.

The model is the denoiser; the run's ``diffusion.objective`` picks the update rule,
:class:`~mot.objectives.diffusion_schedule.DiffusionScheduler` (DDPM/DDIM) or
:class:`~mot.objectives.flow_schedule.FlowScheduler` (rectified flow, Euler/Heun), and
:mod:`.denoising_loop` calls them in turn (the diffusers split: scheduler, denoiser,
pipeline). Everything here works on unified token ids and latents; :mod:`.pipeline` adds the
text tokenizer and the VAE.

**Text -> image.** A prompt is ``<bos> caption <boi>``, as the training documents put a caption
before its image. The image's ``P`` positions (one per latent patch) and its ``<eoi>`` follow.
Attention is causal outside the image, so the prompt's keys and values do not depend on the image:
they are computed once into a :class:`~mot.model.kv_cache.KVCache`, which is then frozen, and each
denoising step runs the model over the ``P + 1`` image positions alone (``reuse_prompt=True``, the
default; ``False`` recomputes the whole sequence each step, the readable reference the tests
compare it with). Classifier-free guidance runs the unconditional prompt ``<bos> <boi>`` (the
caption dropped, as caption dropout trains it) in the same batch and mixes the two predictions,
``eps = eps_uncond + scale * (eps_cond - eps_uncond)`` (likewise the velocities of a flow model).

Prompts of different lengths share a batch by left padding: padding is its own document (id 0,
the prompt's is 1), so no real position attends to it, and positions count from each prompt's
first real token, as in training.

**Image -> text.** The prompt is ``<bos> <boi> image <eoi>`` with the clean latent (timestep 0),
then text tokens are decoded one at a time with an appending cache, greedily or by sampling,
restricted to text ids and ``<eos>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..config import check_number
from ..model.kv_cache import KVCache
from ..model.transformer import MoTModel
from ..objectives.diffusion_schedule import ScheduleError, standard_normal
from ..objectives.schedulers import ALL_METHODS, make_scheduler, sampling_method
from .decoding import Decoder, Request
from .denoising_loop import denoise as denoise_loop
from .logits import GenerationError, Sampling
from .modality_state import SpanRules
from ..tokenizers.vocab import VocabLayout

PAD_DOCUMENT, PROMPT_DOCUMENT = 0, 1
IMAGE_SPAN = 1  # the span id of the image being generated (the prompt has none)


class SamplingError(GenerationError):
    """A bad diffusion sampling argument or prompt; the message names it."""


def check_seed(name: str, seed) -> None:
    """Raise :class:`SamplingError` unless ``seed`` is an integer in ``[0, 2**64)``, the seeds
    torch's generators take: a negative one would be folded silently onto a positive one."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise SamplingError(f"{name}={seed!r}: must be an integer in [0, 2**64)")


def check_temperature(temperature) -> None:
    """Raise :class:`SamplingError` unless ``temperature`` is a finite number >= 0 (0: greedy)."""
    check_number("temperature", temperature, "must be a finite number >= 0 (0: greedy)", lambda v: v >= 0,
                 SamplingError)


@dataclass
class ImageSampling:
    """How to denoise: ``steps`` of ``method`` (the paper samples with 250 DDPM steps), guidance
    ``cfg_scale`` (1: none), ``eta`` for DDIM, and the ``seed`` of the initial noise and DDPM's.
    ``method`` must sample the run's objective: ``ddpm`` or ``ddim`` for DDPM runs, ``euler`` or
    ``heun`` for flow runs; ``None`` is the objective's first (``ddpm``, ``euler``).

    ``clip_latents``: each step's ``x0_hat`` is clamped to ``[-clip, clip]`` (``None``: never). The
    cosine schedule's noisiest level has ``abar = 2.4e-9``, where ``x0_hat = (x_t - sqrt(1 - abar)
    eps) / sqrt(abar)`` multiplies the error of the noise prediction 20,000-fold; unclamped, the
    first steps throw the chain far outside the data (measured: latents of std 5,000 instead of 1).
    MoT-Tiny's VAE latents lie within +-4.7, hence 5; DDPM clamps pixels to +-1 the same way.
    """

    steps: int = 250
    method: Optional[str] = None
    cfg_scale: float = 3.0
    eta: float = 0.0
    seed: int = 0
    clip_latents: Optional[float] = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise SamplingError(f"steps={self.steps!r}: must be an integer >= 1")
        if self.method is not None and self.method not in ALL_METHODS:
            raise SamplingError(f"method={self.method!r}: must be one of {list(ALL_METHODS)}")
        check_number("cfg_scale", self.cfg_scale, "must be a finite number >= 0", lambda v: v >= 0, SamplingError)
        check_number("eta", self.eta, "must be a finite number >= 0", lambda v: v >= 0, SamplingError)
        if self.clip_latents is not None:
            check_number("clip_latents", self.clip_latents, "must be a finite number > 0, or None", lambda v: v > 0,
                         SamplingError)
        check_seed("seed", self.seed)


@dataclass
class _Rows:
    """A left-padded batch of prompts: ``[B, L]`` tensors and each row's real length."""

    tokens: torch.Tensor
    modality_ids: torch.Tensor
    document_ids: torch.Tensor
    positions: torch.Tensor
    lengths: torch.Tensor  # [B]

    def inputs(self) -> dict:
        return dict(tokens=self.tokens, modality_ids=self.modality_ids, document_ids=self.document_ids,
                    positions=self.positions, span_ids=torch.zeros_like(self.tokens))


class TransfusionSampler:
    """Generation with ``model`` (a Transfusion-setting :class:`MoTModel`) over ``layout``.

    ``latent_shape`` is the VAE latent ``(C, h, w)``; ``train_steps``, ``schedule`` and ``objective``
    (ddpm or flow) must be the diffusion settings the model was trained with.
    """

    def __init__(self, model: MoTModel, layout: VocabLayout, latent_shape: Sequence[int],
                 train_steps: int = 1000, schedule: str = "cosine", objective: str = "ddpm"):
        latent = model.config.latent
        if not latent.enabled:
            raise SamplingError("the model has no continuous image path (model.latent.modality is empty)")
        layout.check_model(model.config)
        if len(latent_shape) != 3 or latent_shape[0] != latent.channels:
            raise SamplingError(f"latent_shape={tuple(latent_shape)}: expected ({latent.channels}, height, width)")
        self.model, self.layout = model, layout
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.train_steps, self.schedule, self.objective = train_steps, schedule, objective
        self.text, self.image = (layout.modalities.index(m) for m in (layout.modalities[0], latent.modality))
        self.boi, self.eoi = layout.markers(latent.modality)
        self.placeholder = layout.id_range(latent.modality)[0]
        self.bos = layout.special("<bos>")
        self.patches = model.latent_path.patches_per_image(*self.latent_shape[1:])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- text -> image ---------------------------------------------------------------------------

    @torch.no_grad()
    def text_to_image(self, captions: Sequence[Sequence[int]], sampling: ImageSampling = ImageSampling(),
                      reuse_prompt: bool = True, log: Optional[Callable[[str], None]] = None,
                      seeds: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Latents ``[N, C, h, w]`` for ``captions`` (unified text ids each, without specials); with
        ``log``, the denoising steps' progress (a bar on a terminal, else a line every 30 s).
        Heun's method calls the model twice per step (not on the last; :mod:`.denoising_loop`).
        ``seeds``: one per caption, each row's noise from its own generator, so that a row is the
        image its caption gives alone with its seed (``sampling.seed`` is then unused)."""
        if sampling.steps > self.train_steps:  # the scheduler's own error would not name the argument
            raise SamplingError(f"steps={sampling.steps}: more than the {self.train_steps} diffusion steps the "
                                f"model was trained with")
        scheduler = make_scheduler(self.objective, self.train_steps, self.schedule, self.sampling_method(sampling.method),
                                   sampling.eta, sampling.clip_latents)
        scheduler.set_timesteps(sampling.steps)
        guided = sampling.cfg_scale != 1.0
        # With guidance the unconditional prompts (empty captions) run in the same batch.
        model = self.denoiser(list(captions) + ([[]] * len(captions) if guided else []), reuse_prompt)

        def guided_prediction(x: torch.Tensor, timestep: int) -> torch.Tensor:
            if not guided:
                return model(x, timestep)
            conditional, unconditional = model(torch.cat([x, x]), timestep).chunk(2)
            return unconditional + sampling.cfg_scale * (conditional - unconditional)

        if seeds is not None:
            if len(seeds) != len(captions):
                raise SamplingError(f"seeds: {len(seeds)} for {len(captions)} captions")
            for index, seed in enumerate(seeds):
                check_seed(f"seeds[{index}]", seed)
            generator = [torch.Generator(device=self.device).manual_seed(seed) for seed in seeds]
        else:
            generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        x = standard_normal((len(captions), *self.latent_shape), generator, torch.float32, self.device)
        return denoise_loop(scheduler, guided_prediction, x, generator, log, f"{len(captions)} images")

    def sampling_method(self, method: Optional[str]) -> str:
        """``method`` if it samples the model's objective (``None``: the objective's default), else a
        :class:`SamplingError` naming the methods that do."""
        try:
            return sampling_method(self.objective, method)
        except ScheduleError as error:
            raise SamplingError(f"method={method!r}: {error}") from None

    @torch.no_grad()
    def denoiser(self, captions: Sequence[Sequence[int]], reuse_prompt: bool = True
                 ) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The model's prediction (noise, or velocity for flow) for an image after each of ``captions``
        (unified text ids; an empty caption is the unconditional prompt ``<bos> <boi>``):
        ``eps = denoise(x_t, t)`` with
        ``x_t`` ``[len(captions), C, h, w]``. The prompts are computed once here when ``reuse_prompt``."""
        if not captions:
            raise SamplingError("captions is empty: give at least one prompt")
        for index, caption in enumerate(captions):
            self._check_text(caption, f"captions[{index}]")
        rows = self._left_padded([[self.bos, *caption, self.boi] for caption in captions])
        return self._cached_denoiser(rows) if reuse_prompt else self._full_denoiser(rows)

    def _image_rows(self, prompt_lengths: torch.Tensor) -> dict:
        """The ``P`` image positions and ``<eoi>`` after prompts of ``prompt_lengths [B]``, as model
        inputs ``[B, P + 1]``."""
        batch, width = len(prompt_lengths), self.patches + 1
        tokens = torch.full((batch, width), self.placeholder, device=self.device)
        tokens[:, -1] = self.eoi
        modality_ids = torch.full_like(tokens, self.image)
        modality_ids[:, -1] = self.text  # an end marker belongs to the text that resumes after it
        span_ids = torch.full_like(tokens, IMAGE_SPAN)
        span_ids[:, -1] = 0
        positions = prompt_lengths[:, None] + torch.arange(width, device=self.device)
        return dict(tokens=tokens, modality_ids=modality_ids, span_ids=span_ids, positions=positions,
                    document_ids=torch.full_like(tokens, PROMPT_DOCUMENT))

    def _cached_denoiser(self, rows: _Rows):
        """Denoising steps over the image positions alone, the prompt read from a frozen cache."""
        cache = KVCache(self.model.config.n_layers)
        self.model(**rows.inputs(), cache=cache)
        cache.freeze()
        image = self._image_rows(rows.lengths)
        plan = self.model.plan_for(image["modality_ids"])  # the same every step: built once
        starts = torch.stack([torch.arange(len(rows.lengths)), torch.zeros(len(rows.lengths), dtype=torch.long)], 1)

        def denoise(x: torch.Tensor, timestep: int) -> torch.Tensor:
            timesteps = torch.full((len(x),), timestep, dtype=torch.long, device=self.device)
            return self.model(**image, plan=plan, cache=cache, latents=x, latent_starts=starts.to(self.device),
                              timesteps=timesteps).latent_prediction
        return denoise

    def _full_denoiser(self, rows: _Rows):
        """The reference: every step runs the prompt and the image together, nothing cached."""
        image = self._image_rows(rows.lengths)
        inputs = {name: torch.cat([rows.inputs()[name], image[name]], dim=1) for name in image}
        plan = self.model.plan_for(inputs["modality_ids"])
        width = rows.tokens.shape[1]
        starts = torch.stack([torch.arange(len(rows.lengths)), torch.full((len(rows.lengths),), width)], 1)

        def denoise(x: torch.Tensor, timestep: int) -> torch.Tensor:
            timesteps = torch.full((len(x),), timestep, dtype=torch.long, device=self.device)
            return self.model(**inputs, plan=plan, latents=x, latent_starts=starts.to(self.device),
                              timesteps=timesteps).latent_prediction
        return denoise

    # ---- image -> text ---------------------------------------------------------------------------

    @torch.no_grad()
    def image_to_text(self, latents: torch.Tensor, max_new_tokens: int = 40, temperature: float = 0.0,
                      seed: int = 0) -> List[List[int]]:
        """A caption (unified text ids, ``<eos>`` not included) for each clean latent ``[N, C, h, w]``:
        greedy at ``temperature`` 0, else sampled from the softmax at that temperature (image ``i``
        with seed ``seed + i``). The decoder of :mod:`.decoding` writes it: ``<bos> <boi>``, the
        image's patches, ``<eoi>``, then text until ``<eos>``."""
        if latents.dim() != 4 or tuple(latents.shape[1:]) != self.latent_shape:
            raise SamplingError(f"latents must have shape [images, {', '.join(map(str, self.latent_shape))}], "
                                f"got {list(latents.shape)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise SamplingError(f"max_new_tokens={max_new_tokens!r}: must be an integer >= 1")
        check_temperature(temperature)
        check_seed("seed", seed)
        requests = [self.caption_request(latents[i:i + 1], max_new_tokens, Sampling(temperature=temperature, seed=seed + i))
                    for i in range(len(latents))]
        return [generation.tokens for generation in self.decoder().generate(requests)]

    def caption_request(self, latent: torch.Tensor, max_new_tokens: int, sampling: Sampling) -> Request:
        """The decoding request of image -> text for one clean latent ``[1, C, h, w]``."""
        prompt = [self.bos, self.boi, *[self.placeholder] * self.patches, self.eoi]
        return Request(prompt, mode="text", max_new_tokens=max_new_tokens, latents=latent, sampling=sampling)

    def decoder(self) -> Decoder:
        """The autoregressive decoder of this model (text, and captions of latent images)."""
        return Decoder(self.model, self.layout, SpanRules(image_tokens=self.patches))

    # ---- helpers ---------------------------------------------------------------------------------

    def _check_text(self, ids: Sequence[int], name: str) -> None:
        start, stop = self.layout.id_range(self.layout.modalities[0])
        bad = [i for i in ids if not start <= int(i) < stop]
        if bad:
            raise SamplingError(f"{name} holds id {bad[0]}, which is not a text token (range [{start}, {stop}))")
        longest = self.model.config.max_seq_len - self.patches - 3  # <bos>, <boi>, <eoi>
        if len(ids) > longest:
            raise SamplingError(f"{name} has {len(ids)} tokens; with the image, at most {longest} fit in "
                                f"max_seq_len={self.model.config.max_seq_len}")

    def _left_padded(self, prompts: Sequence[Sequence[int]]) -> _Rows:
        width = max(len(p) for p in prompts)
        pad = self.layout.special("<pad>")
        tokens = torch.full((len(prompts), width), pad, dtype=torch.long)
        documents = torch.full_like(tokens, PAD_DOCUMENT)
        positions = torch.zeros_like(tokens)
        for row, prompt in enumerate(prompts):
            tokens[row, width - len(prompt):] = torch.tensor(prompt)
            documents[row, width - len(prompt):] = PROMPT_DOCUMENT
            positions[row, width - len(prompt):] = torch.arange(len(prompt))
        modality_ids = torch.full_like(tokens, self.text)
        modality_ids[:, -1] = torch.where(tokens[:, -1] == self.boi, self.image, self.text)  # <boi> opens the image
        lengths = torch.tensor([len(p) for p in prompts])
        return _Rows(*(t.to(self.device) for t in (tokens, modality_ids, documents, positions, lengths)))


def latent_shape_of(manifest: dict) -> Tuple[int, int, int]:
    """The ``(C, h, w)`` of a prepared corpus's VAE latents (its ``manifest.json``)."""
    if "latent" not in manifest:
        raise SamplingError("the corpus has no latent shards: it was not prepared for the transfusion setting")
    return tuple(int(s) for s in manifest["latent"]["latent_shape"])
