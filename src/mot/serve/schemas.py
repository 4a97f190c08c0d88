"""The JSON bodies the server accepts, checked by pydantic: unknown fields and wrong types are
refused (strict mode: ``"8"`` is not an integer), every number has its range."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

SEED = Field(0, ge=0, lt=2**63, description="the request's own random seed: the same seed, the same output")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    #: OpenAI clients name the model; it must be the served one when given
    model: Optional[str] = None


class Sampled(Body):
    temperature: float = Field(1.0, ge=0, description="0: greedy")
    top_k: int = Field(0, ge=0, description="keep the k best ids (0: all)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling (1: off)")
    seed: int = SEED


class CompletionBody(Sampled):
    """``POST /v1/completions``, as in the OpenAI completions API."""

    prompt: str = Field(min_length=1)
    max_tokens: int = Field(64, ge=1)
    repetition_penalty: float = Field(1.0, gt=0)
    stream: bool = False


class ImageBody(Sampled):
    """``POST /v1/images``: a caption to draw (a PNG comes back)."""

    prompt: str = Field(min_length=1)
    guidance: float = Field(3.0, ge=0, description="classifier-free guidance scale (1: none)")
    #: Transfusion runs: denoising steps and method (ddpm/ddim for DDPM runs, euler/heun for flow runs)
    steps: int = Field(250, ge=1)
    method: Optional[str] = None


class SpeechBody(Sampled):
    """``POST /v1/speech``: a text to say (a WAV, or the unit ids, comes back)."""

    prompt: str = Field(min_length=1)
    max_units: int = Field(200, ge=1)
    #: wav: audio by the corpus's vocoder; units: ``{"units": [...]}`` for a client with its own vocoder
    format: Literal["wav", "units"] = "wav"
