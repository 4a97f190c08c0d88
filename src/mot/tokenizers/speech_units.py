"""Speech units: log-mel frames at 25 Hz clustered by k-means into 500 discrete units.

This is the paper's speech tokenizer in shape (25 Hz, 500 units, one unit per 40 ms), built
from parts mot can train offline: an 80-bin log-mel spectrogram of 16 kHz audio with a hop of
640 samples, an optional per-bin normalization, and ``MiniBatchKMeans`` fitted on training audio
only. Everything is numpy and scikit-learn; no torchaudio or librosa.

Frame rule: audio of ``n`` samples gives ``ceil(n / 640)`` units, i.e. one unit for every started
40 ms. Unit ``t`` describes samples ``[640 t, 640 (t + 1))``: its 1,024-sample Hann window is
centred on the middle of that interval and the audio is zero-padded at both ends.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from mot.config import check_number
from mot.progress import progress
from mot.tokenizers.fingerprint import fingerprint as directory_fingerprint

SAMPLE_RATE = 16_000
HOP_LENGTH = 640
UNITS_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 25: one unit per 40 ms, as in the paper

_CONFIG_FILE = "config.json"
_CENTROIDS_FILE = "centroids.npy"
_NORMALIZATION_FILE = "normalization.npy"
_KIND = "mot.speech_units"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class LogMelConfig:
    """How audio becomes features. Fixed at 16 kHz and a 640-sample hop (25 Hz); the window,
    bin count, frequency range and log floor may change (they are saved with the tokenizer)."""

    n_mels: int = 80
    win_length: int = 1024  # also the FFT size; longer than the hop so frames overlap
    fmin: float = 0.0
    fmax: float = 8000.0
    # log(max(mel, floor)): digital silence maps to log(floor) instead of -inf.
    log_floor: float = 1e-10

    def __post_init__(self):
        if self.n_mels < 1:
            raise ValueError(f"n_mels must be positive, got {self.n_mels}")
        if self.win_length < HOP_LENGTH:
            raise ValueError(f"win_length must be at least the hop ({HOP_LENGTH}), "
                             f"got {self.win_length}")
        for name in ("fmin", "fmax"):
            check_number(name, getattr(self, name), f"must be a frequency in [0, {SAMPLE_RATE // 2}] Hz",
                         lambda v: 0 <= v <= SAMPLE_RATE / 2)
        if not self.fmin < self.fmax:
            raise ValueError(f"need 0 <= fmin < fmax <= {SAMPLE_RATE // 2} Hz, "
                             f"got fmin={self.fmin}, fmax={self.fmax}")
        check_number("log_floor", self.log_floor, "must be a positive number", lambda v: v > 0)


def num_frames(num_samples: int) -> int:
    """Units (frames) for ``num_samples`` samples of 16 kHz audio: ``ceil(num_samples / 640)``."""
    return math.ceil(num_samples / HOP_LENGTH)


def _hz_to_mel(hz):
    # HTK mel scale.
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = 80, n_fft: int = 1024, sample_rate: int = SAMPLE_RATE,
                   fmin: float = 0.0, fmax: float = 8000.0) -> np.ndarray:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]``, float32, peak 1 (HTK mel scale).

    Filter ``m`` rises linearly from the (m)-th to the (m+1)-th of ``n_mels + 2`` points equally
    spaced in mel between ``fmin`` and ``fmax`` and falls to the (m+2)-th, so neighbouring
    filters overlap by half and together cover ``(fmin, fmax)``.
    """
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    edges[0], edges[-1] = fmin, fmax  # exact ends: the mel round trip would leak ~1e-14 past them
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def _check_audio(audio, sample_rate: int) -> np.ndarray:
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"speech units take {SAMPLE_RATE} Hz audio, got {sample_rate} Hz; "
                         "resample first (mot.data.sources.speech.resample)")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono [num_samples], got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError("audio is empty (0 samples); speech units need at least one sample")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be floating point in [-1, 1], got dtype {audio.dtype}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples")
    return audio.astype(np.float32, copy=False)


def log_mel(audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
            config: LogMelConfig = LogMelConfig()) -> np.ndarray:
    """Log-mel features ``[num_frames(len(audio)), n_mels]`` (float32) of mono 16 kHz audio."""
    audio = _check_audio(audio, sample_rate)
    frames_out = num_frames(len(audio))
    # Centre frame t's window on sample 640 t + 320 (see the module docstring).
    left = (config.win_length - HOP_LENGTH) // 2
    right = (frames_out - 1) * HOP_LENGTH + config.win_length - left - len(audio)
    padded = np.pad(audio, (left, right))
    frames = np.lib.stride_tricks.sliding_window_view(padded, config.win_length)[::HOP_LENGTH]
    window, filters = _analysis(config)
    power = np.abs(np.fft.rfft(frames[:frames_out] * window, axis=1)) ** 2  # [T, win // 2 + 1]
    with _one_blas_thread():
        mel = power @ filters.T  # [T, n_mels]
    return np.log(np.maximum(mel, config.log_floor)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController  # ships with scikit-learn

    return ThreadpoolController()


def _one_blas_thread():
    """Run the small per-utterance products on one BLAS thread. Measured on a shared 2-core
    machine, OpenBLAS's spinning worker threads made feature extraction 7x and encoding 50x
    slower than one thread; parallelism belongs at the level of utterances instead."""
    return _blas_controller().limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=8)
def _analysis(config: LogMelConfig) -> tuple[np.ndarray, np.ndarray]:
    """The periodic Hann window ``[win]`` and mel filters ``[n_mels, win // 2 + 1]`` of a config,
    computed once per config rather than once per utterance."""
    n = np.arange(config.win_length)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / config.win_length)).astype(np.float32)
    filters = mel_filterbank(config.n_mels, config.win_length, SAMPLE_RATE, config.fmin,
                             config.fmax)
    return window, filters


class SpeechUnitTokenizer:
    """Audio → discrete units at 25 Hz. Fit on training audio, freeze, save, identify by hash.

    >>> tokenizer = SpeechUnitTokenizer().fit(train_audios, 16_000, num_units=500, seed=0)
    >>> units = tokenizer.encode(audio, 16_000)   # int64 [ceil(len(audio) / 640)]
    """

    units_per_second = UNITS_PER_SECOND

    def __init__(self, config: LogMelConfig = LogMelConfig()):
        self.config = config
        self.centroids: np.ndarray | None = None  # float32 [num_units, n_mels]
        # float32 [2, n_mels]: per-bin mean and std of the training features, or None.
        self.normalization: np.ndarray | None = None
        self.seed: int | None = None

    # ------------------------------------------------------------------ fitting

    def fit(self, audios: Sequence[np.ndarray], sample_rate: int, num_units: int = 500,
            seed: int = 0, normalize: bool = True,
            log: Callable[[str], None] = print) -> SpeechUnitTokenizer:
        """Fit ``num_units`` k-means centroids on the log-mel frames of ``audios`` (training audio
        only). Deterministic for a given seed. ``normalize`` standardizes each mel bin with the
        training mean and std first, so no bin dominates the distance. Progress goes to ``log``.
        Returns ``self``."""
        # Imported here: slow to import, and encoding does not need them.
        from sklearn.cluster import MiniBatchKMeans
        from threadpoolctl import threadpool_limits

        if num_units < 2:
            raise ValueError(f"num_units must be at least 2, got {num_units}")
        if len(audios) == 0:
            raise ValueError("fit needs at least one training audio, got none")
        features = np.concatenate([self._features(a, sample_rate, i) for i, a in
                                   enumerate(progress(audios, "speech units: log-mel features", log=log,
                                                      unit="utterances"))])
        if len(features) < num_units:
            raise ValueError(f"fit needs at least num_units={num_units} frames, got "
                             f"{len(features)} ({len(features) / UNITS_PER_SECOND:.1f} s of audio)")
        normalization = None
        if normalize:
            # A floor on std keeps a constant bin (e.g. above a voice's band limit) finite.
            normalization = np.stack([features.mean(0), np.maximum(features.std(0), 1e-5)])
            features = (features - normalization[0]) / normalization[1]
        # One k-means++ start on batches of 4,096 frames: on 600 synthesized utterances it gave
        # the lowest held-out distortion of the settings tried, and three starts cost 3-10x the
        # time for nothing (docs/data.md, Speech). One thread, for the reason in _one_blas_thread.
        kmeans = MiniBatchKMeans(n_clusters=num_units, random_state=seed, n_init=1,
                                 batch_size=4096, max_iter=100)
        # scikit-learn reports no progress from inside fit, so say what runs and how big it is
        log(f"speech units: k-means of {len(features):,} frames into {num_units} units")
        with threadpool_limits(limits=1):  # BLAS and scikit-learn's OpenMP
            kmeans.fit(features)
        self.centroids = kmeans.cluster_centers_.astype(np.float32)
        self.normalization = None if normalization is None else normalization.astype(np.float32)
        self.seed = seed
        return self

    # ------------------------------------------------------------------ encoding

    @property
    def num_units(self) -> int:
        """Size of the unit vocabulary (ids are ``0 .. num_units - 1``)."""
        return len(self._fitted_centroids())

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Units of mono 16 kHz float audio: int64 ``[ceil(len(audio) / 640)]``, one per 40 ms."""
        centroids = self._fitted_centroids()
        features = self._features(audio, sample_rate).astype(np.float64)
        if self.normalization is not None:
            features = (features - self.normalization[0]) / self.normalization[1]
        # Squared distance up to the per-frame constant |x|^2: |c|^2 - 2 x.c  -> [T, num_units]
        centroids = centroids.astype(np.float64)
        with _one_blas_thread():
            distances = (centroids**2).sum(1) - 2.0 * features @ centroids.T
        return distances.argmin(1).astype(np.int64)

    def centroid_log_mel(self, units: np.ndarray) -> np.ndarray:
        """The log-mel ``[T, n_mels]`` each unit's centroid stands for (normalization undone): what
        the units alone say of the spectrum."""
        features = self._fitted_centroids()[np.asarray(units, dtype=np.int64)]
        if self.normalization is not None:
            features = features * self.normalization[1] + self.normalization[0]
        return features

    def usage(self, audios: Sequence[np.ndarray], sample_rate: int = SAMPLE_RATE) -> float:
        """Fraction of the ``num_units`` units that occur at least once in ``audios``."""
        if len(audios) == 0:
            raise ValueError("usage needs at least one audio, got none")
        used = np.unique(np.concatenate([self.encode(a, sample_rate) for a in audios]))
        return len(used) / self.num_units

    def _features(self, audio, sample_rate: int, index: int | None = None) -> np.ndarray:
        try:
            return log_mel(audio, sample_rate, self.config)
        except ValueError as error:
            if index is None:
                raise
            raise ValueError(f"training audio {index}: {error}") from error

    def _fitted_centroids(self) -> np.ndarray:
        if self.centroids is None:
            raise RuntimeError("SpeechUnitTokenizer is not fitted: call fit() or "
                               "SpeechUnitTokenizer.load(directory) first")
        return self.centroids

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``centroids.npy`` and (if normalized) ``normalization.npy``.
        The bytes depend only on the fitted state, so equal tokenizers have equal fingerprints."""
        centroids = self._fitted_centroids()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"kind": _KIND, "format_version": _FORMAT_VERSION, "sample_rate": SAMPLE_RATE,
                  "hop_length": HOP_LENGTH, "num_units": len(centroids), "seed": self.seed,
                  "normalize": self.normalization is not None, "log_mel": asdict(self.config)}
        (directory / _CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        np.save(directory / _CENTROIDS_FILE, centroids)
        normalization_path = directory / _NORMALIZATION_FILE
        if self.normalization is not None:
            np.save(normalization_path, self.normalization)
        elif normalization_path.exists():
            normalization_path.unlink()  # a stale file from an earlier save would change the hash
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> SpeechUnitTokenizer:
        """Load a tokenizer written by :meth:`save`; every missing or inconsistent file is an
        error that names the file and what is wrong with it."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"speech unit tokenizer directory {directory} does not exist")
        config = _read_config(directory / _CONFIG_FILE)
        try:
            mel_config = LogMelConfig(**config["log_mel"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{directory / _CONFIG_FILE}: bad 'log_mel' section: {error}") from error
        tokenizer = cls(mel_config)
        tokenizer.seed = config.get("seed")
        tokenizer.centroids = _read_array(directory / _CENTROIDS_FILE,
                                          (config["num_units"], mel_config.n_mels))
        if config["normalize"]:
            tokenizer.normalization = _read_array(directory / _NORMALIZATION_FILE,
                                                  (2, mel_config.n_mels))
        return tokenizer

    def fingerprint(self) -> str:
        """Content hash of the saved tokenizer (equal to ``fingerprint(directory)`` of any
        directory it was saved to)."""
        with tempfile.TemporaryDirectory(prefix="mot-speech-units-") as tmp:
            return directory_fingerprint(self.save(tmp))


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"speech unit tokenizer file {path} is missing")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict) or config.get("kind") != _KIND:
        raise ValueError(f"{path} does not describe a speech unit tokenizer "
                         f"(kind={config.get('kind') if isinstance(config, dict) else None!r}, "
                         f"expected {_KIND!r})")
    if config.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {config.get('format_version')!r} is not "
                         f"supported (expected {_FORMAT_VERSION})")
    expected = {"sample_rate": SAMPLE_RATE, "hop_length": HOP_LENGTH}
    for key, value in expected.items():
        if config.get(key) != value:
            raise ValueError(f"{path}: {key}={config.get(key)!r}, this version supports only {value}")
    for key, kind in (("num_units", int), ("normalize", bool), ("log_mel", dict)):
        if not isinstance(config.get(key), kind):
            raise ValueError(f"{path}: field {key!r} is missing or not {kind.__name__}: "
                             f"{config.get(key)!r}")
    unknown = set(config["log_mel"]) - {f.name for f in fields(LogMelConfig)}
    if unknown:
        raise ValueError(f"{path}: unknown log_mel keys {sorted(unknown)}")
    return config


def _read_array(path: Path, shape: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"speech unit tokenizer file {path} is missing")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npy array: {error}") from error
    if array.shape != shape or array.dtype != np.float32 or not np.all(np.isfinite(array)):
        raise ValueError(f"{path}: expected finite float32 array of shape {shape}, got "
                         f"{array.dtype} {array.shape}")
    return array
