"""Synthesized speech: voices and speaker ids, WAV helpers, resampling, engine errors, and (when
espeak-ng / flite are installed) real synthesis at 16 kHz.

Error paths run against a tiny fake ``flite`` written into a temporary ``PATH``, so they are
tested on every machine; tests of real synthesis skip when the engine is absent.
"""

from __future__ import annotations

import shutil
import sys
import textwrap

import numpy as np
import pytest
import scipy.io.wavfile

from mot.data.sources import speech
from mot.data.sources.errors import SourceUnavailable
from mot.data.sources.speech import (
    SAMPLE_RATE, SynthesisError, Utterance, Voice, choose_voice, read_wav, resample,
    synthesize, synthesize_many, write_wav)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (Debian package espeak-ng)")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None,
                                 reason="flite is not installed (Debian package flite)")
needs_any_engine = pytest.mark.skipif(not speech.available_engines(),
                                      reason="neither espeak-ng nor flite is installed")

TEXT = "a red circle left of a blue square"


# --------------------------------------------------------------------------- voices


def test_speaker_id_round_trip():
    voice = Voice("espeak", "en-us+f2", 160, 50)
    assert voice.speaker_id == "espeak:en-us+f2:rate160:pitch50"
    assert Voice.from_speaker_id(voice.speaker_id) == voice
    assert Voice.from_speaker_id("flite:slt:rate100:pitch175") == Voice("flite", "slt", 100, 175)


@pytest.mark.parametrize("args, message", [
    (("festival", "kal", 100, 100), "unknown speech engine"),
    (("espeak", "en:us", 150, 50), "no ':'"),
    (("espeak", "en-us", 0, 50), "rate must be positive"),
    (("espeak", "en-us", 150, 120), "out of range for espeak"),
])
def test_bad_voices(args, message):
    with pytest.raises(ValueError, match=message):
        Voice(*args)


@pytest.mark.parametrize("speaker_id", ["espeak:en-us", "espeak:en-us:fast:pitch50",
                                        "espeak:en-us:rate150:pitchhigh"])
def test_malformed_speaker_ids(speaker_id):
    with pytest.raises(ValueError, match="malformed speaker id"):
        Voice.from_speaker_id(speaker_id)


# --------------------------------------------------------------------------- audio helpers


def test_wav_round_trip_is_16_bit(tmp_path):
    audio = (0.8 * np.sin(np.linspace(0, 200, 4000))).astype(np.float32)
    write_wav(tmp_path / "a.wav", audio)
    loaded, rate = read_wav(tmp_path / "a.wav")
    assert rate == SAMPLE_RATE and loaded.dtype == np.float32
    assert np.abs(loaded - audio).max() <= 1.5 / 32767
    assert (tmp_path / "a.wav").stat().st_size == 44 + 2 * 4000  # header + int16 samples


def test_write_clips_and_read_averages_channels(tmp_path):
    write_wav(tmp_path / "loud.wav", np.array([2.0, -3.0, 0.5], np.float32), 8000)
    loaded, rate = read_wav(tmp_path / "loud.wav")
    assert rate == 8000 and loaded.max() <= 1.0 and loaded.min() >= -1.0
    stereo = np.array([[16384, 0], [-16384, -16384]], np.int16)
    scipy.io.wavfile.write(tmp_path / "stereo.wav", 16000, stereo)
    np.testing.assert_allclose(read_wav(tmp_path / "stereo.wav")[0], [0.25, -0.5])
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "x.wav", stereo)


def test_read_wav_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav does not exist"):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not a wave file")
    with pytest.raises(ValueError, match="bad.wav is not a readable WAV"):
        read_wav(tmp_path / "bad.wav")


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 16000])
def test_resample_keeps_pitch_and_duration(rate):
    t = np.arange(rate) / rate  # one second
    out = resample(np.sin(2 * np.pi * 440 * t), rate)
    assert out.dtype == np.float32 and abs(len(out) - SAMPLE_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.fft.rfftfreq(len(out), 1 / SAMPLE_RATE)[spectrum.argmax()] - 440) <= 1


# --------------------------------------------------------------------------- missing / failing engines


def test_missing_engine_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda program: None)
    assert speech.available_engines() == []
    with pytest.raises(SourceUnavailable, match="Debian package 'espeak-ng'"):
        synthesize(TEXT, Voice("espeak", "en-us", 150, 50))
    with pytest.raises(SourceUnavailable, match="Debian package 'flite'"):
        speech.require_engine("flite")
    with pytest.raises(SourceUnavailable, match="espeak-ng.*flite"):
        synthesize_many([TEXT], seed=0)


@pytest.fixture
def fake_flite(tmp_path, monkeypatch):
    """A stand-in ``flite`` on PATH whose behaviour (``ok``, ``fail``, ``silent``) the test sets."""
    mode = tmp_path / "mode"
    program = tmp_path / "flite"
    program.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, numpy as np, scipy.io.wavfile
        if "-lv" in sys.argv:
            print("Voices available: slt kal")
            sys.exit(0)
        mode = open({str(mode)!r}).read()
        if mode == "fail":
            print("fake flite: cannot open voice", file=sys.stderr)
            sys.exit(3)
        out = sys.argv[sys.argv.index("-o") + 1]
        t = np.arange(8000) / 8000
        audio = np.zeros(8000) if mode == "silent" else 0.5 * np.sin(2 * np.pi * 300 * t)
        scipy.io.wavfile.write(out, 8000, (audio * 32767).astype(np.int16))
        """))
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    return mode


def test_fake_engine_output_is_resampled_to_16_khz(fake_flite):
    fake_flite.write_text("ok")
    utterance = synthesize(TEXT, Voice("flite", "kal", 100, 110))
    assert isinstance(utterance, Utterance)
    assert utterance.sample_rate == SAMPLE_RATE and len(utterance.audio) == SAMPLE_RATE
    assert utterance.speaker_id == "flite:kal:rate100:pitch110" and utterance.text == TEXT
    assert speech.available_engines() == ["flite"]
    assert choose_voice(3, 0).name in ("slt", "kal")  # only installed voices are drawn


def test_engine_failure_names_text_and_voice(fake_flite):
    fake_flite.write_text("fail")
    with pytest.raises(SynthesisError, match=r"status 3 on text 'a red circle.*flite:slt:"
                                             r"rate100:pitch175.*cannot open voice"):
        synthesize(TEXT, Voice("flite", "slt", 100, 175))


def test_silent_output_is_an_error(fake_flite):
    fake_flite.write_text("silent")
    with pytest.raises(SynthesisError, match="silent audio for text 'hello' with voice flite:slt"):
        synthesize("hello", Voice("flite", "slt", 100, 175))


def test_uninstalled_voice_and_empty_text(fake_flite):
    fake_flite.write_text("ok")
    with pytest.raises(ValueError, match="flite voice 'rms' is not installed"):
        synthesize(TEXT, Voice("flite", "rms", 100, 110))
    with pytest.raises(ValueError, match="empty text"):
        synthesize("  ", Voice("flite", "slt", 100, 175))


# --------------------------------------------------------------------------- real engines


def _check_speech(utterance: Utterance):
    assert utterance.sample_rate == SAMPLE_RATE and utterance.audio.dtype == np.float32
    assert 0.5 < utterance.duration < 6.0
    assert np.sqrt(np.mean(utterance.audio**2)) > 0.01  # audible, not silence
    assert np.abs(utterance.audio).max() <= 1.0 + 1e-3


@needs_espeak
def test_espeak_speaks_deterministically_and_speakers_differ():
    first = synthesize(TEXT, Voice("espeak", "en-us+f2", 160, 50))
    _check_speech(first)
    again = synthesize(TEXT, Voice("espeak", "en-us+f2", 160, 50))
    np.testing.assert_array_equal(first.audio, again.audio)
    for other in (Voice("espeak", "en-gb+m3", 160, 50), Voice("espeak", "en-us+f2", 190, 50),
                  Voice("espeak", "en-us+f2", 160, 65)):
        utterance = synthesize(TEXT, other)
        _check_speech(utterance)
        assert utterance.speaker_id != first.speaker_id
        assert (len(utterance.audio) != len(first.audio)
                or not np.allclose(utterance.audio, first.audio, atol=1e-3))


@needs_espeak
def test_espeak_reads_text_that_looks_like_an_option():
    _check_speech(synthesize("-v is not an option here", Voice("espeak", "en-us", 150, 50)))


@needs_espeak
def test_espeak_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant 'm99'"):
        synthesize(TEXT, Voice("espeak", "en-us+m99", 150, 50))


@needs_flite
def test_flite_voices_rate_and_pitch_change_the_audio():
    base = synthesize(TEXT, Voice("flite", "slt", 100, 175))
    _check_speech(base)
    np.testing.assert_array_equal(base.audio, synthesize(TEXT, Voice("flite", "slt", 100, 175)).audio)
    slower = synthesize(TEXT, Voice("flite", "slt", 85, 175))
    assert len(slower.audio) > len(base.audio) * 1.1
    higher = synthesize(TEXT, Voice("flite", "slt", 100, 195))
    assert len(higher.audio) != len(base.audio) or not np.allclose(higher.audio, base.audio)
    names, _, _ = speech.voice_grid("flite")
    for name in names:
        _check_speech(synthesize(TEXT, Voice("flite", name, 100, 110)))


@needs_any_engine
def test_synthesize_many_is_deterministic_and_independent_of_workers():
    texts = [f"{colour} {shape}" for colour in ("red", "green") for shape in ("circle", "square",
                                                                              "star")]
    parallel = synthesize_many(texts, seed=7, workers=2)
    serial = synthesize_many(texts, seed=7, workers=1)
    assert [u.text for u in parallel] == texts
    assert [u.speaker_id for u in parallel] == [choose_voice(7, i).speaker_id
                                                for i in range(len(texts))]
    for a, b in zip(parallel, serial):
        assert a.speaker_id == b.speaker_id
        np.testing.assert_array_equal(a.audio, b.audio)
        _check_speech(a)
    other_seed = [choose_voice(8, i).speaker_id for i in range(len(texts))]
    assert other_seed != [u.speaker_id for u in parallel]


@needs_any_engine
def test_choose_voice_spreads_over_engines_and_voices():
    voices = [choose_voice(0, i) for i in range(200)]
    assert voices == [choose_voice(0, i) for i in range(200)]
    assert {v.engine for v in voices} == set(speech.available_engines())
    assert len({v.speaker_id for v in voices}) > 50
    for voice in voices:
        assert Voice.from_speaker_id(voice.speaker_id) == voice


def test_synthesize_many_reports_progress_and_keeps_the_order(fake_flite):
    fake_flite.write_text("ok")
    texts = [f"text number {i}" for i in range(5)]
    lines = []
    parallel = synthesize_many(texts, seed=1, workers=2, log=lines.append)
    serial = synthesize_many(texts, seed=1, workers=1, log=lambda _: None)
    assert [u.text for u in parallel] == [u.text for u in serial] == texts
    assert [u.speaker_id for u in parallel] == [u.speaker_id for u in serial]
    assert len(lines) == 1 and lines[0].startswith("speech synthesis: 5/5 utterances (100%)")
