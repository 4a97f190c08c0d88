"""Speech you can hear: speech units -> log-mel with a small network, then Griffin-Lim.

The unit tokenizer (:mod:`.speech_units`) keeps one of 500 k-means centroids per 40 ms and drops
everything else, including which voice spoke. :class:`UnitVocoder` learns the way back on the
corpus's own audio: an embedding per unit, residual 1-D convolutions over time (each unit's
neighbours, 17 frames = 0.68 s of context with the defaults, say how it is coarticulated), and a
linear map to the 80 log-mel bins, trained with an L1 loss on the per-bin standardized log-mel
of the training utterances (random crops of ``crop_frames``). The log-mel it predicts is turned
into a waveform by :func:`~.speech_inversion.log_mel_to_audio`.

It is a tokenizer in every other respect: trained once by ``mot prepare`` on the train split,
frozen, saved as ``config.json`` + ``model.safetensors`` + ``checksums.json``, identified by a
fingerprint. Its quality is measured on held-out utterances by :func:`vocoder_report`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Sequence

import numpy as np
import torch
from torch import nn

from ..config import ConfigError
from ..progress import progress
from .saved import SavedTokenizer, config_to_dict
from .speech_inversion import DB_PER_NEPER, log_mel_distance, log_mel_to_audio, mel_distance
from .speech_units import SAMPLE_RATE, LogMelConfig, SpeechUnitTokenizer, log_mel

KIND = "speech_vocoder"


@dataclass(frozen=True)
class VocoderConfig:
    """The network's shape and the log-mel it predicts (the unit tokenizer's, so the two agree)."""

    num_units: int = 500
    n_mels: int = 80
    win_length: int = 1024
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-10
    width: int = 128
    blocks: int = 4
    kernel_size: int = 5

    def __post_init__(self) -> None:
        for name in ("num_units", "width", "blocks", "kernel_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}: must be an integer >= 1")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size={self.kernel_size}: must be odd, so a unit's frame stays centred")
        self.mel_config  # validates the log-mel fields

    @property
    def mel_config(self) -> LogMelConfig:
        return LogMelConfig(self.n_mels, self.win_length, self.fmin, self.fmax, self.log_floor)

    def to_dict(self) -> dict:
        return config_to_dict(self, KIND)


class _Block(nn.Module):
    """``x + pointwise(gelu(conv_k(x)))`` over time, on ``[B, width, T]``."""

    def __init__(self, width: int, kernel_size: int):
        super().__init__()
        self.temporal = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2)
        self.pointwise = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(nn.functional.gelu(self.temporal(x)))


class UnitVocoder(SavedTokenizer, nn.Module):
    """Unit ids ``[B, T]`` -> standardized log-mel ``[B, T, n_mels]`` (:meth:`forward`);
    :meth:`log_mel` and :meth:`audio` for one utterance in the tokenizer's own units; ``save``,
    ``load`` and ``fingerprint`` as every saved tokenizer."""

    kind = KIND
    config_class = VocoderConfig

    def __init__(self, config: VocoderConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.num_units, config.width)
        self.blocks = nn.Sequential(*[_Block(config.width, config.kernel_size) for _ in range(config.blocks)])
        self.out = nn.Linear(config.width, config.n_mels)
        # per-bin mean and std of the training log-mel: the network predicts standardized values
        self.register_buffer("mel_mean", torch.zeros(config.n_mels))
        self.register_buffer("mel_std", torch.ones(config.n_mels))

    def forward(self, units: torch.Tensor) -> torch.Tensor:
        hidden = self.blocks(self.embed(units).transpose(1, 2))  # [B, width, T]
        return self.out(hidden.transpose(1, 2))

    @torch.no_grad()
    def log_mel(self, units: Sequence[int] | np.ndarray) -> np.ndarray:
        """The log-mel ``[T, n_mels]`` (float32, natural log of mel power) the units stand for."""
        ids = torch.as_tensor(np.asarray(units, dtype=np.int64))
        if ids.ndim != 1 or len(ids) == 0:
            raise ValueError(f"units must be a non-empty 1-D sequence of unit ids, got shape {list(ids.shape)}")
        bad = ids[(ids < 0) | (ids >= self.config.num_units)]
        if len(bad):
            raise ValueError(f"unit id {int(bad[0])} is outside [0, {self.config.num_units})")
        standardized = self(ids[None].to(self.mel_mean.device))[0]
        return (standardized * self.mel_std + self.mel_mean).float().cpu().numpy()

    def audio(self, units: Sequence[int] | np.ndarray, iterations: int = 64, seed: int = 0) -> np.ndarray:
        """Mono 16 kHz float32 audio, 640 samples per unit."""
        return log_mel_to_audio(self.log_mel(units), self.config.mel_config, iterations, seed)


@dataclass(frozen=True)
class VocoderTraining:
    """How the vocoder is fitted: AdamW steps on batches of random crops."""

    steps: int = 1500
    batch_size: int = 32
    crop_frames: int = 64
    lr: float = 3e-3
    seed: int = 0


def fit_vocoder(units: SpeechUnitTokenizer, audios: Sequence[np.ndarray], training: VocoderTraining = VocoderTraining(),
                config: VocoderConfig | None = None, log: Callable[[str], None] = print) -> UnitVocoder:
    """Train a vocoder for ``units`` on ``audios`` (16 kHz training utterances): each is encoded
    to units and analysed to log-mel, and the network learns the one from the other."""
    if not audios:
        raise ValueError("fit_vocoder needs at least one training utterance, got none")
    mel = units.config
    config = config or VocoderConfig(units.num_units, mel.n_mels, mel.win_length, mel.fmin, mel.fmax, mel.log_floor)
    if (config.num_units, config.mel_config) != (units.num_units, mel):
        raise ValueError(f"the vocoder's units and log-mel ({config.num_units}, {config.mel_config}) are not the "
                         f"unit tokenizer's ({units.num_units}, {mel})")
    pairs = [(units.encode(a, SAMPLE_RATE), log_mel(a, SAMPLE_RATE, mel))
             for a in progress(audios, "vocoder: units and log-mel", log=log, unit="utterances")]
    features = np.concatenate([f for _, f in pairs])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        vocoder = UnitVocoder(config)
    vocoder.mel_mean.copy_(torch.from_numpy(features.mean(0)))
    vocoder.mel_std.copy_(torch.from_numpy(np.maximum(features.std(0), 1e-3)))
    _train(vocoder, pairs, training, log)
    return vocoder.eval()


def _train(vocoder: UnitVocoder, pairs, training: VocoderTraining, log) -> None:
    optimizer = torch.optim.AdamW(vocoder.parameters(), lr=training.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / training.steps, 1.0))))
    rng = np.random.default_rng([training.seed, 7])
    vocoder.train()
    start, loss_sum = time.perf_counter(), 0.0
    for step in progress(range(training.steps), "vocoder: training", log=log, unit="steps"):
        ids, targets, mask = _batch(vocoder, pairs, training, rng)
        error = (vocoder(ids) - targets).abs().mean(-1)  # [B, T]
        loss = (error * mask).sum() / mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += float(loss.detach())
        if (step + 1) % 500 == 0 or step + 1 == training.steps:
            log(f"vocoder: step {step + 1}/{training.steps} L1 {loss_sum / ((step % 500) + 1):.3f} "
                f"(standardized log-mel), {time.perf_counter() - start:.0f} s")
            loss_sum = 0.0


def _batch(vocoder: UnitVocoder, pairs, training: VocoderTraining, rng: np.random.Generator):
    """``[B, crop]`` unit ids, standardized target log-mel ``[B, crop, n_mels]`` and a mask of the
    real frames: random crops of random training utterances (shorter ones padded)."""
    crop, chosen = training.crop_frames, rng.integers(len(pairs), size=training.batch_size)
    ids = torch.zeros(training.batch_size, crop, dtype=torch.long)
    targets = torch.zeros(training.batch_size, crop, vocoder.config.n_mels)
    mask = torch.zeros(training.batch_size, crop)
    for row, index in enumerate(chosen):
        unit_ids, features = pairs[index]
        begin = int(rng.integers(max(len(unit_ids) - crop, 0) + 1))
        length = min(crop, len(unit_ids) - begin)
        ids[row, :length] = torch.from_numpy(unit_ids[begin:begin + length])
        targets[row, :length] = torch.from_numpy(features[begin:begin + length])
        mask[row, :length] = 1.0
    return ids, (targets - vocoder.mel_mean) / vocoder.mel_std, mask


def vocoder_report(vocoder: UnitVocoder, units: SpeechUnitTokenizer, audios: Sequence[np.ndarray],
                   iterations: int = 64) -> Dict[str, float]:
    """How close speech comes back, on held-out ``audios``: mean absolute log-mel distance (natural
    log of mel power; :func:`~.speech_inversion.mel_distance`) to the original utterance of

    * ``inversion``: the original's own log-mel through Griffin-Lim (the ceiling: the inversion alone);
    * ``vocoder``: its units through the vocoder and Griffin-Lim (what ``mot generate`` plays);
    * ``centroids``: its units' k-means centroids as the log-mel, through Griffin-Lim (no network);

    and ``vocoder_mel``, the vocoder's log-mel against the original's before any inversion, all
    averaged over utterances; each also in dB (``*_db``)."""
    if not audios:
        raise ValueError("vocoder_report needs at least one held-out utterance")
    mel = units.config
    totals = {"inversion": 0.0, "vocoder": 0.0, "centroids": 0.0, "vocoder_mel": 0.0}
    for seed, audio in enumerate(audios):
        ids = units.encode(audio, SAMPLE_RATE)
        original = log_mel(audio, SAMPLE_RATE, mel)
        predicted = vocoder.log_mel(ids)
        for name, features in (("inversion", original), ("vocoder", predicted),
                               ("centroids", units.centroid_log_mel(ids))):
            totals[name] += mel_distance(log_mel_to_audio(features, mel, iterations, seed), audio, mel)
        totals["vocoder_mel"] += log_mel_distance(predicted, original)
    report = {name: value / len(audios) for name, value in totals.items()}
    report.update({f"{name}_db": value * DB_PER_NEPER for name, value in list(report.items())})
    report["utterances"] = len(audios)
    return report

