"""From a log-mel spectrogram back to a waveform, and how far two waveforms sound apart.

The speech units' log-mel (:mod:`.speech_units`) has 25 frames a second, one per 640 samples,
each a 1,024-sample window: too sparse for phase reconstruction, which needs windows that overlap
several times. So the inversion first resamples the frames in time to 100 a second (hop 160,
linear interpolation of the log-mel, each frame at the time its window is centred on), then
undoes the mel filters, then recovers a phase:

1. **mel -> linear power**: the non-negative spectrum ``S`` that the mel filters ``F`` map closest
   to the mel power ``M`` (``min |F S - M|^2`` with ``S >= 0``), by Lee and Seung's multiplicative
   updates ``S <- S * (F^T M) / (F^T F S)``, which keep ``S`` non-negative and never increase the
   error (``librosa.util.nnls`` solves the same problem with L-BFGS-B, 100x slower here).
2. **phase**: ``librosa.griffinlim`` (the fast Griffin-Lim of Perraudin et al., 2013, momentum
   0.99), on the same Hann window as the analysis and a seeded random initial phase.

:func:`mel_distance` compares the log-mel of two waveforms, frame by frame, with both floored
at ``DISTANCE_FLOOR`` power (about 90 dB below a loud vowel's frames) so that the near-silence of
a recording (a log of 1e-10) and Griffin-Lim's faint residue there do not dominate the mean.
"""

from __future__ import annotations

import math

import numpy as np

from .speech_units import HOP_LENGTH, SAMPLE_RATE, LogMelConfig, _analysis, log_mel, num_frames

SYNTHESIS_HOP = 160  # samples: 100 frames a second, 6.4 windows over every sample
NNLS_ITERATIONS = 100
DISTANCE_FLOOR = 1e-4  # mel power; log 1e-4 = -9.2
DB_PER_NEPER = 10.0 / math.log(10.0)  # a difference of natural-log power in dB


def _random_state(seed: int):
    """Griffin-Lim's random start for ``seed``, any integer in [0, 2**63) (mot's seed range):
    numpy's legacy seeding stops at 2**32, so larger seeds get a Generator of their own."""
    return seed if seed < 2**32 else np.random.default_rng(seed)


def log_mel_to_audio(features: np.ndarray, config: LogMelConfig = LogMelConfig(), iterations: int = 64,
                     seed: int = 0) -> np.ndarray:
    """Mono 16 kHz float32 audio of ``num_frames * 640`` samples whose log-mel is close to
    ``features [num_frames, n_mels]`` (natural-log mel power at 25 Hz, as :func:`log_mel` gives)."""
    import librosa  # imported here: slow to import, and only synthesis needs it

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != config.n_mels or len(features) == 0:
        raise ValueError(f"log-mel features must be [frames >= 1, n_mels={config.n_mels}], got {list(features.shape)}")
    if not np.all(np.isfinite(features)):
        raise ValueError("log-mel features contain NaN or infinite values")
    length = len(features) * HOP_LENGTH
    mel_power = np.exp(_resample_frames(features, length))  # [n_mels, synthesis frames]
    _, filters = _analysis(config)
    power = _mel_to_linear(filters.astype(np.float64), mel_power)  # [win // 2 + 1, synthesis frames]
    audio = librosa.griffinlim(np.sqrt(power).astype(np.float32), n_iter=iterations, hop_length=SYNTHESIS_HOP,
                               win_length=config.win_length, n_fft=config.win_length, window="hann", center=True,
                               length=length, momentum=0.99, init="random", random_state=_random_state(seed))
    return audio.astype(np.float32)


def _resample_frames(features: np.ndarray, length: int) -> np.ndarray:
    """``[n_mels, 1 + length // 160]``: the 25 Hz frames linearly interpolated at the centres of
    the 100 Hz synthesis frames (frame ``j`` is centred on sample ``160 j``; unit frame ``t`` on
    ``640 t + 320``), held constant beyond the first and last."""
    centres = np.arange(1 + length // SYNTHESIS_HOP) * SYNTHESIS_HOP
    position = (centres - HOP_LENGTH / 2) / HOP_LENGTH  # in unit frames
    frames = np.arange(len(features))
    return np.stack([np.interp(position, frames, features[:, b]) for b in range(features.shape[1])])


def _mel_to_linear(filters: np.ndarray, mel_power: np.ndarray) -> np.ndarray:
    """Non-negative least squares ``min |filters @ S - mel_power|`` by multiplicative updates,
    started from the filters' transpose (every bin inherits its filters' power)."""
    numerator = filters.T @ mel_power  # [bins, frames]
    spectrum = numerator / np.maximum(filters.sum(axis=0), 1e-8)[:, None]
    gram = filters.T @ filters
    for _ in range(NNLS_ITERATIONS):
        spectrum *= numerator / np.maximum(gram @ spectrum, 1e-12)
    return spectrum


def mel_distance(audio: np.ndarray, reference: np.ndarray, config: LogMelConfig = LogMelConfig()) -> float:
    """Mean absolute difference of the two waveforms' log-mel power (natural log, both floored at
    ``DISTANCE_FLOOR``) over the frames they share and every bin. Multiply by ``DB_PER_NEPER``
    for decibels."""
    frames = min(num_frames(len(audio)), num_frames(len(reference)))
    return log_mel_distance(log_mel(audio, SAMPLE_RATE, config)[:frames], log_mel(reference, SAMPLE_RATE, config)[:frames])


def log_mel_distance(features: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference of two log-mel spectrograms of one shape, both floored at
    ``DISTANCE_FLOOR`` (what :func:`mel_distance` measures, before any audio)."""
    floor = math.log(DISTANCE_FLOOR)
    return float(np.abs(np.maximum(features, floor) - np.maximum(reference, floor)).mean())
