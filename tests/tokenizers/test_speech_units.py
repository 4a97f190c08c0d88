"""Speech units: the 25 Hz frame rule, the mel filterbank, k-means determinism, save/load, errors.

All audio here is synthetic (chirps, tones and noise from a seeded numpy generator), so these
tests need no speech engine.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mot.tokenizers.fingerprint import fingerprint
from mot.tokenizers.speech_units import (
    HOP_LENGTH, SAMPLE_RATE, UNITS_PER_SECOND, LogMelConfig, SpeechUnitTokenizer, log_mel,
    mel_filterbank, num_frames)


def chirpy(seed: int, seconds: float) -> np.ndarray:
    """Speech-like synthetic audio: a few gliding tones with a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = np.zeros_like(t)
    for _ in range(3):
        f0, f1 = rng.uniform(100, 3000, size=2)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(seconds, 1e-3)))
        audio += rng.uniform(0.1, 0.3) * np.sin(phase)
    audio *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t) ** 2
    audio += 0.01 * rng.standard_normal(len(t))
    return audio.astype(np.float32)


@pytest.fixture(scope="module")
def train_audio() -> list[np.ndarray]:
    return [chirpy(seed, 1.0 + 0.25 * (seed % 4)) for seed in range(12)]


@pytest.fixture(scope="module")
def fitted(train_audio) -> SpeechUnitTokenizer:
    return SpeechUnitTokenizer().fit(train_audio, SAMPLE_RATE, num_units=16, seed=0)


# --------------------------------------------------------------------------- frame rate


def test_one_unit_per_40_ms():
    assert UNITS_PER_SECOND == 25 == SAMPLE_RATE / HOP_LENGTH
    assert SpeechUnitTokenizer.units_per_second == 25


@pytest.mark.parametrize("num_samples", [1, 639, 640, 641, 1280, 8000, 12_345, 16_000, 16_001,
                                         40_000])
def test_frame_count_is_ceil_of_samples_over_hop(num_samples, fitted):
    expected = math.ceil(num_samples / 640)
    audio = chirpy(num_samples, num_samples / SAMPLE_RATE)[:num_samples]
    audio = np.pad(audio, (0, num_samples - len(audio)))
    assert num_frames(num_samples) == expected
    assert log_mel(audio).shape == (expected, 80)
    units = fitted.encode(audio, SAMPLE_RATE)
    assert units.shape == (expected,) and units.dtype == np.int64


@pytest.mark.parametrize("seconds, units", [(0.04, 1), (0.05, 2), (1.0, 25), (2.5, 63), (3.0, 75)])
def test_durations_give_25_units_per_second_rounded_up(seconds, units):
    assert len(log_mel(np.zeros(round(seconds * SAMPLE_RATE), np.float32))) == units


def test_frame_t_describes_its_own_40_ms():
    # A click inside hop interval t moves frame t's energy the most.
    audio = np.zeros(SAMPLE_RATE, np.float32)
    for t in (0, 7, 24):
        clicked = audio.copy()
        clicked[t * HOP_LENGTH + HOP_LENGTH // 2] = 1.0
        energy = log_mel(clicked).max(axis=1)
        assert int(energy.argmax()) == t


# --------------------------------------------------------------------------- mel filterbank


def test_filterbank_shape_and_nonnegative():
    filters = mel_filterbank(80, 1024, SAMPLE_RATE)
    assert filters.shape == (80, 513) and filters.dtype == np.float32
    assert (filters >= 0).all() and filters.max() <= 1.0


def test_each_filter_peaks_once_and_centres_increase():
    filters = mel_filterbank(80, 1024, SAMPLE_RATE)
    peaks = filters.argmax(axis=1)
    for row, peak in zip(filters, peaks):
        assert row[peak] > 0
        assert (np.diff(row[: peak + 1]) >= 0).all() and (np.diff(row[peak:]) <= 0).all()
        assert (row == row[peak]).sum() == 1
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > peaks[0]


@pytest.mark.parametrize("fmin, fmax", [(0.0, 8000.0), (60.0, 7600.0), (0.0, 4000.0)])
def test_filterbank_covers_the_range_and_nothing_outside(fmin, fmax):
    filters = mel_filterbank(80, 1024, SAMPLE_RATE, fmin, fmax)
    freqs = np.linspace(0, SAMPLE_RATE / 2, 513)
    inside = (freqs > fmin) & (freqs < fmax)
    assert (filters.sum(axis=0)[inside] > 0).all()
    assert (filters[:, ~inside] == 0).all()


def test_a_tone_lights_the_filter_centred_on_it():
    filters = mel_filterbank(80, 1024, SAMPLE_RATE)
    freqs = np.linspace(0, SAMPLE_RATE / 2, 513)
    centres = freqs[filters.argmax(axis=1)]
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    for hz in (250.0, 1000.0, 4000.0):
        features = log_mel((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
        loudest = features[5:-5].mean(axis=0).argmax()
        assert abs(centres[loudest] - hz) <= 2 * SAMPLE_RATE / 1024 + 0.06 * hz


def test_silence_is_the_log_floor():
    features = log_mel(np.zeros(3000, np.float32))
    np.testing.assert_allclose(features, np.log(1e-10), rtol=1e-6)


# --------------------------------------------------------------------------- fitting


def test_same_seed_same_centroids_other_seed_differs(train_audio, fitted):
    again = SpeechUnitTokenizer().fit(train_audio, SAMPLE_RATE, num_units=16, seed=0)
    np.testing.assert_array_equal(again.centroids, fitted.centroids)
    assert again.fingerprint() == fitted.fingerprint()
    other = SpeechUnitTokenizer().fit(train_audio, SAMPLE_RATE, num_units=16, seed=1)
    assert not np.array_equal(other.centroids, fitted.centroids)
    assert other.fingerprint() != fitted.fingerprint()


def test_encode_is_nearest_centroid_and_usage_counts_units(train_audio, fitted):
    audio = train_audio[0]
    units = fitted.encode(audio, SAMPLE_RATE)
    features = (log_mel(audio) - fitted.normalization[0]) / fitted.normalization[1]
    distances = ((features[:, None, :] - fitted.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(units, distances.argmin(1))
    assert units.min() >= 0 and units.max() < fitted.num_units == 16
    assert fitted.usage([audio]) == len(np.unique(units)) / 16
    assert 0.5 < fitted.usage(train_audio) <= 1.0


def test_default_is_500_units(train_audio):
    audios = train_audio + [chirpy(100 + i, 2.0) for i in range(8)]
    tokenizer = SpeechUnitTokenizer().fit(audios, SAMPLE_RATE, seed=0)
    assert tokenizer.num_units == 500 and tokenizer.centroids.shape == (500, 80)


def test_without_normalization(train_audio, tmp_path):
    plain = SpeechUnitTokenizer().fit(train_audio, SAMPLE_RATE, num_units=8, normalize=False)
    assert plain.normalization is None
    plain.save(tmp_path)
    assert not (tmp_path / "normalization.npy").exists()
    loaded = SpeechUnitTokenizer.load(tmp_path)
    np.testing.assert_array_equal(loaded.encode(train_audio[1], SAMPLE_RATE),
                                  plain.encode(train_audio[1], SAMPLE_RATE))


# --------------------------------------------------------------------------- save / load


def test_save_load_identity_and_fingerprint(train_audio, fitted, tmp_path):
    fitted.save(tmp_path / "a")
    loaded = SpeechUnitTokenizer.load(tmp_path / "a")
    np.testing.assert_array_equal(loaded.centroids, fitted.centroids)
    np.testing.assert_array_equal(loaded.normalization, fitted.normalization)
    assert loaded.config == fitted.config and loaded.seed == 0
    for audio in train_audio[:3]:
        np.testing.assert_array_equal(loaded.encode(audio, SAMPLE_RATE),
                                      fitted.encode(audio, SAMPLE_RATE))
    assert fingerprint(tmp_path / "a") == fitted.fingerprint() == loaded.fingerprint()
    loaded.save(tmp_path / "b")
    assert fingerprint(tmp_path / "b") == fingerprint(tmp_path / "a")


def test_custom_log_mel_config_round_trips(train_audio, tmp_path):
    config = LogMelConfig(n_mels=40, win_length=800, fmin=50.0, fmax=7000.0)
    tokenizer = SpeechUnitTokenizer(config).fit(train_audio, SAMPLE_RATE, num_units=8)
    loaded = SpeechUnitTokenizer.load(tokenizer.save(tmp_path))
    assert loaded.config == config and loaded.centroids.shape == (8, 40)


# --------------------------------------------------------------------------- errors


def test_wrong_sample_rate_says_16_khz(fitted):
    with pytest.raises(ValueError, match="16000 Hz audio, got 22050 Hz"):
        fitted.encode(np.zeros(22050, np.float32), 22050)


@pytest.mark.parametrize("audio, message", [
    (np.zeros(0, np.float32), "empty"),
    (np.zeros((2, 100), np.float32), "mono"),
    (np.zeros(100, np.int16), "floating point"),
    (np.array([0.0, np.nan], np.float32), "NaN"),
])
def test_bad_audio(fitted, audio, message):
    with pytest.raises(ValueError, match=message):
        fitted.encode(audio, SAMPLE_RATE)


def test_not_fitted(tmp_path):
    tokenizer = SpeechUnitTokenizer()
    for call in (lambda: tokenizer.encode(np.zeros(100, np.float32), SAMPLE_RATE),
                 lambda: tokenizer.save(tmp_path), lambda: tokenizer.fingerprint()):
        with pytest.raises(RuntimeError, match="not fitted"):
            call()


def test_fit_errors(train_audio):
    with pytest.raises(ValueError, match="at least num_units=500 frames, got"):
        SpeechUnitTokenizer().fit(train_audio[:2], SAMPLE_RATE)
    with pytest.raises(ValueError, match="training audio 1: .*empty"):
        SpeechUnitTokenizer().fit([train_audio[0], np.zeros(0, np.float32)], SAMPLE_RATE, 4)
    with pytest.raises(ValueError, match="got 8000 Hz"):
        SpeechUnitTokenizer().fit(train_audio, 8000, num_units=4)
    with pytest.raises(ValueError, match="at least one training audio"):
        SpeechUnitTokenizer().fit([], SAMPLE_RATE, num_units=4)


def test_load_missing_directory_and_files(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SpeechUnitTokenizer.load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        SpeechUnitTokenizer.load(tmp_path)
    fitted.save(tmp_path)
    (tmp_path / "centroids.npy").unlink()
    with pytest.raises(FileNotFoundError, match="centroids.npy is missing"):
        SpeechUnitTokenizer.load(tmp_path)


def test_load_corrupt_files(fitted, tmp_path):
    fitted.save(tmp_path)
    config_text = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config_text[:20])
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        SpeechUnitTokenizer.load(tmp_path)
    config = json.loads(config_text)
    for key, value, message in (("kind", "image_vq", "not describe a speech unit tokenizer"),
                                ("sample_rate", 22050, "sample_rate=22050"),
                                ("num_units", "many", "'num_units'"),
                                ("log_mel", {"n_mels": 80, "colour": 1}, "unknown log_mel keys")):
        (tmp_path / "config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(ValueError, match=message):
            SpeechUnitTokenizer.load(tmp_path)
    (tmp_path / "config.json").write_text(config_text)
    (tmp_path / "centroids.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="centroids.npy is not a readable .npy"):
        SpeechUnitTokenizer.load(tmp_path)
    np.save(tmp_path / "centroids.npy", np.zeros((16, 40), np.float32))
    with pytest.raises(ValueError, match=r"centroids.npy: expected .*\(16, 80\)"):
        SpeechUnitTokenizer.load(tmp_path)
