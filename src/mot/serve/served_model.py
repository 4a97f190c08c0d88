"""A trained run as the server sees it: which tasks it does, how a request's fields become a
decoding request (built by the run's pipeline, so the server's outputs are the Python API's), and
how generated ids become a response: text, a PNG, a WAV.

Tasks by setting:

=============== ================================ ===================================
task            chameleon / chameleon_speech     transfusion
=============== ================================ ===================================
completions     decoded                          decoded
images          decoded (VQ codes)               denoised (:class:`DiffusionRequest`)
captions        decoded                          decoded over the image's latents
speech          decoded (chameleon_speech)       -
transcriptions  decoded (chameleon_speech)       -
=============== ================================ ===================================
"""

from __future__ import annotations

import io
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..config import ConfigError
from ..data.sources.speech import SAMPLE_RATE, decode_wav, resample, write_wav
from ..generate.decoding import Decoder, Generation, Request
from ..generate.image_files import read_image
from ..generate.logits import GenerationError, Sampling
from ..generate.pipeline import TransfusionPipeline
from ..generate.pipelines import Pipeline, pipeline_for_run
from ..generate.transfusion import ImageSampling

TASKS = ("completions", "images", "captions", "speech", "transcriptions")


class TaskError(GenerationError):
    """A request this model cannot serve or whose input is unusable (the server answers 400)."""


@dataclass(frozen=True)
class DiffusionRequest:
    """A Transfusion text -> image request: the caption and how to denoise."""

    prompt: str
    sampling: ImageSampling


class ServedModel:
    """``pipeline`` (a run's :class:`ChameleonPipeline` or :class:`TransfusionPipeline`) named ``name``."""

    def __init__(self, pipeline: Pipeline, name: str):
        self.pipeline, self.name = pipeline, name
        self.transfusion = isinstance(pipeline, TransfusionPipeline)
        self.decoder: Decoder = pipeline.sampler.decoder() if self.transfusion else pipeline.decoder
        self.layout = pipeline.layout
        self.modality_table = self.layout.modality_table()
        if self.transfusion:
            self.setting = "transfusion"
        else:
            self.setting = "chameleon_speech" if pipeline.has_speech else "chameleon"
        speech = not self.transfusion and pipeline.has_speech
        self.tasks = tuple(t for t in TASKS if speech or t not in ("speech", "transcriptions"))

    @classmethod
    def from_run(cls, run_dir: str | Path, step: Optional[int] = None, log=print) -> "ServedModel":
        """The newest complete checkpoint (or ``step``'s) of the run in ``run_dir``."""
        return cls(pipeline_for_run(run_dir, log=log, step=step), Path(run_dir).resolve().name)

    def require(self, task: str) -> None:
        if task not in self.tasks:
            raise TaskError(f"this model ({self.setting} setting) does not do {task}; it does {', '.join(self.tasks)}")

    def modality_of(self, token: int) -> str:
        """The modality a generated id belongs to (specials count as text)."""
        modality = self.layout.modalities[int(self.modality_table[token])]
        return modality if modality in ("image", "speech") else "text"

    # ---- requests --------------------------------------------------------------------------------

    def completion(self, prompt: str, max_tokens: int, sampling: Sampling) -> Request:
        self.require("completions")
        return self.pipeline.completion_request(prompt, max_tokens, sampling)

    def image(self, prompt: str, sampling: Sampling, guidance: float,
              diffusion: Optional[ImageSampling] = None) -> Request | DiffusionRequest:
        """A text -> image request: decoded codes (Chameleon) or a diffusion (Transfusion)."""
        self.require("images")
        if self.transfusion:
            if not isinstance(prompt, str) or not prompt.strip():
                raise TaskError(f"prompt={prompt!r}: a prompt must hold some text")
            diffusion = diffusion or ImageSampling(seed=sampling.seed)
            sampler = self.pipeline.sampler
            sampler.sampling_method(diffusion.method)  # raises for a method of the other objective
            if diffusion.steps > sampler.train_steps:  # checked now, not in a batch of other requests
                raise TaskError(f"steps={diffusion.steps}: more than the {sampler.train_steps} diffusion steps the "
                                f"model was trained with")
            return DiffusionRequest(prompt, diffusion)
        return self.pipeline.image_request(prompt, sampling, guidance)

    def caption(self, image_file: bytes, max_tokens: int, sampling: Sampling) -> Request:
        """An image -> text request for an uploaded PNG or JPEG (resized to the model's images)."""
        self.require("captions")
        tokenizer = self.pipeline.vae if self.transfusion else self.pipeline.vq
        try:
            image = read_image(io.BytesIO(image_file), tokenizer.config.image_size, name="the upload")
        except ConfigError:  # Pillow's own message names a BytesIO object
            raise TaskError("the upload is not a readable image (send a PNG or JPEG file's bytes)") from None
        if self.transfusion:
            return self.pipeline.sampler.caption_request(tokenizer.encode(image[None]), max_tokens, sampling)
        return self.pipeline.caption_requests(image[None], max_tokens, sampling)[0]

    def speech(self, prompt: str, max_units: int, sampling: Sampling) -> Request:
        self.require("speech")
        return self.pipeline.speech_request(prompt, sampling, max_units)

    def transcription(self, wav_file: bytes, max_tokens: int, sampling: Sampling) -> Request:
        """A speech -> text request for an uploaded WAV file (any rate; mono or averaged)."""
        self.require("transcriptions")
        try:
            audio, rate = decode_wav(io.BytesIO(wav_file), "the upload")
        except ValueError as error:
            raise TaskError(str(error)) from None
        if audio.size == 0 or not np.all(np.isfinite(audio)):
            raise TaskError("the WAV file holds no samples, or samples that are not finite numbers")
        units = self.pipeline.audio_to_units(resample(audio, rate, SAMPLE_RATE))
        return self.pipeline.transcription_request(units, max_tokens, sampling)

    def prompt_tokens(self, work: Request | DiffusionRequest) -> int:
        """How many ids a request's prompt holds."""
        return len(self.pipeline.encode_text(work.prompt)) if isinstance(work, DiffusionRequest) else len(work.prompt)

    # ---- results ---------------------------------------------------------------------------------

    def text(self, tokens: Sequence[int]) -> str:
        return self.pipeline.decode_text(tokens)

    def image_png(self, generation: Generation) -> bytes:
        """The PNG of a decoded text -> image generation."""
        return png(self.pipeline.decode_images([self.pipeline.image_codes(generation)])[0])

    def speech_units(self, generation: Generation, max_units: int) -> np.ndarray:
        """The unit ids ``[0, units)`` of a text -> speech generation."""
        return self.pipeline.units_of(generation.tokens, max_units)

    def speech_wav(self, generation: Generation, seed: int, max_units: int) -> bytes:
        """The WAV (16 kHz mono) of a text -> speech generation, by the corpus's vocoder."""
        return wav(self.pipeline.speech_audio(self.speech_units(generation, max_units), seed=seed))

    def denoise(self, requests: List[DiffusionRequest]) -> List[bytes]:
        """PNGs of Transfusion text -> image requests, each the image the pipeline draws for it
        alone: requests that denoise alike (steps, method, guidance...) run as one batch, each row
        with its own seed's noise."""
        groups: dict = {}  # the settings but the seed -> the requests' indices
        for index, request in enumerate(requests):
            groups.setdefault(astuple(replace(request.sampling, seed=0)), []).append(index)
        images: List[bytes] = [b""] * len(requests)
        for members in groups.values():
            drawn = self.pipeline.text_to_image([requests[i].prompt for i in members], requests[members[0]].sampling,
                                                seeds=[requests[i].sampling.seed for i in members])
            for index, image in zip(members, drawn):
                images[index] = png(image)
        return images


def png(image: np.ndarray) -> bytes:
    """``uint8 [S, S, 3]`` as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def wav(audio: np.ndarray) -> bytes:
    """Mono 16 kHz float audio as 16-bit PCM WAV bytes."""
    buffer = io.BytesIO()
    write_wav(buffer, audio)
    return buffer.getvalue()
