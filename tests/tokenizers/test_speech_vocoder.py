"""Speech back to audio: the log-mel inversion (mel filters undone, Griffin-Lim), the unit vocoder
(training, units -> log-mel, save/load/fingerprint) and the report of its quality."""

import json

import numpy as np
import pytest
import torch

from mot.config import ConfigError
from mot.io.weights import CheckpointError
from mot.tokenizers.speech_inversion import (DISTANCE_FLOOR, _mel_to_linear, _resample_frames, log_mel_to_audio,
                                             mel_distance)
from mot.tokenizers.speech_units import LogMelConfig, _analysis, log_mel
from mot.tokenizers.speech_vocoder import UnitVocoder, VocoderConfig, vocoder_report

from tests.helpers import tone_speech, tone_utterances


@pytest.fixture(scope="module")
def speech():
    return tone_speech()


def test_the_inversion_gives_back_audio_with_the_same_log_mel():
    audio = tone_utterances(1, seed=3)[0]
    features = log_mel(audio)
    inverted = log_mel_to_audio(features, iterations=32)
    assert inverted.dtype == np.float32 and len(inverted) == len(features) * 640
    # the inversion alone is close; audio that merely has the same loudness is far
    noise = np.random.default_rng(0).normal(0, float(audio.std()), len(audio)).astype(np.float32)
    assert mel_distance(inverted, audio) < 0.5 < 2.0 < mel_distance(noise, audio)
    assert mel_distance(audio, audio) == 0.0
    # seeded: the same phase every time
    assert np.array_equal(inverted, log_mel_to_audio(features, iterations=32))


def test_undoing_the_mel_filters_gives_a_non_negative_spectrum_with_that_mel():
    _, filters = _analysis(LogMelConfig())
    rng = np.random.default_rng(1)
    spectrum = rng.gamma(1.0, 1.0, size=(filters.shape[1], 6))
    mel = filters.astype(np.float64) @ spectrum
    recovered = _mel_to_linear(filters.astype(np.float64), mel)
    assert recovered.min() >= 0
    relative = np.abs(filters @ recovered - mel) / mel
    assert float(np.median(relative)) < 0.02


def test_frames_are_resampled_at_the_centres_of_their_windows():
    features = np.array([[0.0], [4.0]])  # unit frames centred on samples 320 and 960
    resampled = _resample_frames(features, 1280)[0]  # synthesis frames centred on 0, 160, ..., 1280
    np.testing.assert_allclose(resampled, [0, 0, 0, 1, 2, 3, 4, 4, 4])  # 320 -> 0, 480 -> 1, ..., 960 -> 4


def test_the_vocoder_learns_units_back_into_their_log_mel(speech):
    units, vocoder = speech
    audio = tone_utterances(1, seed=9)[0]  # not a training utterance
    ids = units.encode(audio, 16_000)
    predicted, original = vocoder.log_mel(ids), log_mel(audio)
    assert predicted.shape == original.shape and predicted.dtype == np.float32
    floor = np.log(DISTANCE_FLOOR)
    error = np.abs(np.maximum(predicted, floor) - np.maximum(original, floor)).mean()
    untrained = UnitVocoder(vocoder.config)
    untrained.load_state_dict({**untrained.state_dict(), "mel_mean": vocoder.mel_mean, "mel_std": vocoder.mel_std})
    untrained_error = np.abs(np.maximum(untrained.log_mel(ids), floor) - np.maximum(original, floor)).mean()
    assert error < 0.6 * untrained_error
    sound = vocoder.audio(ids, iterations=8)
    assert len(sound) == len(ids) * 640 and np.isfinite(sound).all()


def test_save_load_and_fingerprint(speech, tmp_path):
    _, vocoder = speech
    directory = vocoder.save(tmp_path / "vocoder")
    loaded = UnitVocoder.load(directory)
    assert loaded.config == vocoder.config and loaded.fingerprint() == vocoder.fingerprint()
    ids = np.arange(12) % vocoder.config.num_units
    np.testing.assert_array_equal(loaded.log_mel(ids), vocoder.log_mel(ids))
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        UnitVocoder.load(directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "kind": "image_vq"}))
    with pytest.raises(CheckpointError, match="kind='image_vq'"):
        UnitVocoder.load(directory)
    with pytest.raises(CheckpointError, match="not a directory"):
        UnitVocoder.load(tmp_path / "missing")


def test_bad_input_is_a_clear_error(speech):
    _, vocoder = speech
    with pytest.raises(ValueError, match="unit id 12 is outside"):
        vocoder.log_mel([0, 12])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        vocoder.log_mel([])
    with pytest.raises(ValueError, match="n_mels=80"):
        log_mel_to_audio(np.zeros((4, 20)))
    with pytest.raises(ValueError, match="NaN"):
        log_mel_to_audio(np.full((4, 80), np.nan))
    with pytest.raises(ConfigError, match="kernel_size=4"):
        VocoderConfig(kernel_size=4)
    with pytest.raises(ConfigError, match="width=0"):
        VocoderConfig(width=0)


def test_the_report_puts_the_vocoder_between_the_inversion_and_nothing(speech):
    units, vocoder = speech
    report = vocoder_report(vocoder, units, tone_utterances(2, seed=11), iterations=16)
    assert report["utterances"] == 2
    assert report["inversion"] < report["vocoder"]
    assert report["vocoder_db"] == pytest.approx(report["vocoder"] * 10 / np.log(10))
    assert set(report) >= {"inversion", "vocoder", "centroids", "vocoder_mel"}
    torch.testing.assert_close(torch.tensor(report["inversion_db"]), torch.tensor(report["inversion"] * 4.3429448))
