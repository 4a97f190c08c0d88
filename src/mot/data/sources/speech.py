"""Synthesized speech: text spoken by espeak-ng and flite in many voices, at 16 kHz.

Each utterance records the voice that spoke it as a stable speaker id such as
``espeak:en-us+f2:rate160:pitch50`` or ``flite:slt:rate100:pitch175``. The units of ``rate`` and
``pitch`` are the engine's own:

- espeak-ng: rate in words per minute (``-s``), pitch on espeak's 0–99 scale (``-p``);
- flite: rate in percent of the voice's normal speed (``duration_stretch = 100 / rate``), pitch as
  the target mean F0 in Hz (``int_f0_target_mean``).

The voice of the i-th text of ``synthesize_many(texts, seed)`` depends only on ``(seed, i)`` and
on which engines and voices are installed, so a corpus is reproducible and can be built in any
order or in parallel. Both engines are deterministic (same text and voice, same samples).
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import scipy.signal

from mot.data.sources.errors import SourceUnavailable
from mot.errors import MotError
from mot.progress import progress

SAMPLE_RATE = 16_000
"""The rate of every utterance this module returns, and the rate the speech tokenizer takes."""

ENGINES = ("espeak", "flite")
_PROGRAMS = {"espeak": "espeak-ng", "flite": "flite"}
_DEBIAN_PACKAGES = {"espeak": "espeak-ng", "flite": "flite"}

# The voice grid that ``choose_voice`` draws from. English accents times espeak's human-sounding
# variants (the "robot", "whisper" and novelty variants would teach the units noise, not speech).
ESPEAK_LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                    "en-029", "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
ESPEAK_RATES = (130, 150, 170, 190)
ESPEAK_PITCHES = (35, 50, 65)
# awb_time is left out: it can only speak clock times. kal is an 8 kHz voice (telephone band).
FLITE_VOICES = ("awb", "kal", "kal16", "rms", "slt")
FLITE_RATES = (85, 100, 115)
_FLITE_PITCHES_MALE = (95, 110, 125)
_FLITE_PITCHES_FEMALE = (155, 175, 195)
_FLITE_FEMALE = frozenset({"slt"})

# Peak below this (about -80 dBFS) means the engine produced nothing audible.
_SILENCE_PEAK = 1e-4


class SynthesisError(MotError, RuntimeError):
    """A speech engine failed on one text: it exited non-zero, timed out or produced silence."""


@dataclass(frozen=True)
class Voice:
    """One speaker: an engine, one of its voices, a speaking rate and a pitch (engine units)."""

    engine: str
    name: str
    rate: int
    pitch: int

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"unknown speech engine {self.engine!r}; expected one of {ENGINES}")
        if not self.name or ":" in self.name:
            raise ValueError(f"voice name must be non-empty and contain no ':', got {self.name!r}")
        if self.rate <= 0:
            raise ValueError(f"voice rate must be positive, got {self.rate}")
        if not 0 <= self.pitch <= (99 if self.engine == "espeak" else 1000):
            raise ValueError(f"pitch {self.pitch} is out of range for {self.engine}")

    @property
    def speaker_id(self) -> str:
        """The stable string recorded with every utterance, e.g. ``espeak:en-us+f2:rate160:pitch50``."""
        return f"{self.engine}:{self.name}:rate{self.rate}:pitch{self.pitch}"

    @classmethod
    def from_speaker_id(cls, speaker_id: str) -> Voice:
        """Inverse of :attr:`speaker_id`."""
        parts = speaker_id.split(":")
        if (len(parts) != 4 or not parts[2].startswith("rate") or not parts[3].startswith("pitch")
                or not parts[2][4:].isdigit() or not parts[3][5:].isdigit()):
            raise ValueError(f"malformed speaker id {speaker_id!r}; expected "
                             "'engine:voice:rate<int>:pitch<int>'")
        return cls(parts[0], parts[1], int(parts[2][4:]), int(parts[3][5:]))


@dataclass(frozen=True, eq=False)
class Utterance:
    """One synthesized (or loaded) utterance: ``audio`` is float32 ``[num_samples]`` in [-1, 1]."""

    text: str
    speaker_id: str
    sample_rate: int
    audio: np.ndarray

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.audio) / self.sample_rate


# --------------------------------------------------------------------------- engines and voices


def available_engines() -> list[str]:
    """The engines whose program is on ``PATH``, in the order of :data:`ENGINES`."""
    return [engine for engine in ENGINES if shutil.which(_PROGRAMS[engine])]


def require_engine(engine: str) -> str:
    """Path of the engine's program; :class:`SourceUnavailable` naming the Debian package if absent."""
    if engine not in ENGINES:
        raise ValueError(f"unknown speech engine {engine!r}; expected one of {ENGINES}")
    path = shutil.which(_PROGRAMS[engine])
    if path is None:
        raise SourceUnavailable(
            f"speech engine {engine!r} needs the program {_PROGRAMS[engine]!r}, which is not on "
            f"PATH; install the Debian package {_DEBIAN_PACKAGES[engine]!r} "
            f"(apt-get install {_DEBIAN_PACKAGES[engine]})")
    return path


@functools.lru_cache(maxsize=None)
def _installed_voices(program: str) -> tuple[frozenset[str], frozenset[str]]:
    """What the installed engine offers: (languages or voices, variants). Cached per program path,
    because both engines accept unknown names silently and fall back to a default voice."""
    if Path(program).name == "flite":
        listing = subprocess.run([program, "-lv"], capture_output=True, text=True, check=True)
        return frozenset(listing.stdout.split(":", 1)[-1].split()), frozenset()
    languages = subprocess.run([program, "--voices=en"], capture_output=True, text=True,
                               check=True).stdout.splitlines()[1:]
    variants = subprocess.run([program, "--voices=variant"], capture_output=True, text=True,
                              check=True).stdout.splitlines()[1:]
    # Rows: priority, language, age/gender, name, file, ... ; variant files look like "!v/f2".
    return (frozenset(row.split()[1] for row in languages if len(row.split()) > 4),
            frozenset(row.split()[4].removeprefix("!v/") for row in variants
                      if len(row.split()) > 4))


def _check_voice_installed(voice: Voice, program: str) -> None:
    names, variants = _installed_voices(program)
    if voice.engine == "flite":
        if voice.name not in names:
            raise ValueError(f"flite voice {voice.name!r} is not installed "
                             f"(installed: {', '.join(sorted(names))})")
        return
    language, _, variant = voice.name.partition("+")
    if language not in names:
        raise ValueError(f"espeak-ng language {language!r} of voice {voice.name!r} is not "
                         f"installed (installed English: {', '.join(sorted(names))})")
    if variant and variant not in variants:
        raise ValueError(f"espeak-ng variant {variant!r} of voice {voice.name!r} is not installed")


def voice_grid(engine: str) -> tuple[list[str], tuple[int, ...], dict[str, tuple[int, ...]]]:
    """The (voice names, rates, pitches per voice) that :func:`choose_voice` draws from for
    ``engine``, restricted to what is installed. Raises :class:`SourceUnavailable` if absent."""
    program = require_engine(engine)
    names, variants = _installed_voices(program)
    if engine == "flite":
        voices = [v for v in FLITE_VOICES if v in names]
        pitches = {v: _FLITE_PITCHES_FEMALE if v in _FLITE_FEMALE else _FLITE_PITCHES_MALE
                   for v in voices}
        return voices, FLITE_RATES, pitches
    voices = [f"{lang}+{var}" for lang in ESPEAK_LANGUAGES if lang in names
              for var in ESPEAK_VARIANTS if var in variants]
    return voices, ESPEAK_RATES, {v: ESPEAK_PITCHES for v in voices}


def choose_voice(seed: int, index: int, engines: Sequence[str] | None = None) -> Voice:
    """The voice of utterance ``index`` of a corpus drawn with ``seed``.

    The engine is drawn uniformly from ``engines`` (default: all installed), then a voice, a rate
    and a pitch uniformly from that engine's grid. Drawing the engine first keeps flite's five
    voices from being swamped by espeak's many accent × variant combinations.
    """
    engines = sorted(engines if engines is not None else available_engines())
    if not engines:
        raise SourceUnavailable(_no_engine_message())
    rng = np.random.default_rng([seed, index])
    engine = engines[rng.integers(len(engines))]
    names, rates, pitches = voice_grid(engine)
    if not names:
        raise SourceUnavailable(f"{_PROGRAMS[engine]} is installed but none of the voices mot "
                                f"uses is: reinstall the Debian package {_DEBIAN_PACKAGES[engine]!r}")
    name = names[rng.integers(len(names))]
    rate = rates[rng.integers(len(rates))]
    pitch = pitches[name][rng.integers(len(pitches[name]))]
    return Voice(engine, name, int(rate), int(pitch))


def _no_engine_message() -> str:
    return ("no speech engine is installed: install the Debian packages 'espeak-ng' and/or "
            "'flite' (apt-get install espeak-ng flite)")


# --------------------------------------------------------------------------- synthesis


def synthesize(text: str, voice: Voice, timeout: float = 60.0) -> Utterance:
    """Speak ``text`` with ``voice`` and return a 16 kHz float32 :class:`Utterance`.

    Raises :class:`SourceUnavailable` if the engine is not installed, ``ValueError`` for empty
    text or a voice that is not installed, and :class:`SynthesisError` (naming the text and the
    voice) if the engine fails or produces silence.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"cannot synthesize empty text {text!r} (voice {voice.speaker_id})")
    program = require_engine(voice.engine)
    _check_voice_installed(voice, program)
    with tempfile.TemporaryDirectory(prefix="mot-speech-") as tmp:
        path = Path(tmp) / "out.wav"
        if voice.engine == "espeak":
            # Text goes through stdin so a text starting with "-" is not read as an option.
            command = [program, "-v", voice.name, "-s", str(voice.rate), "-p", str(voice.pitch),
                       "-w", str(path), "--stdin"]
            stdin = text
        else:
            command = [program, "-voice", voice.name,
                       "--setf", f"duration_stretch={100 / voice.rate:.6f}",
                       "--setf", f"int_f0_target_mean={voice.pitch}",
                       "-t", text, "-o", str(path)]
            stdin = None
        where = f"text {_short(text)} with voice {voice.speaker_id}"
        try:
            done = subprocess.run(command, input=stdin, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise SynthesisError(f"{_PROGRAMS[voice.engine]} timed out after {timeout} s on "
                                 f"{where}") from error
        if done.returncode != 0:
            raise SynthesisError(f"{_PROGRAMS[voice.engine]} exited with status "
                                 f"{done.returncode} on {where}: {done.stderr.strip()[-300:]}")
        if not path.exists() or path.stat().st_size == 0:
            raise SynthesisError(f"{_PROGRAMS[voice.engine]} wrote no audio for {where}")
        audio, rate = read_wav(path)
    audio = resample(audio, rate, SAMPLE_RATE)
    if audio.size == 0 or float(np.abs(audio).max()) < _SILENCE_PEAK:
        raise SynthesisError(f"{_PROGRAMS[voice.engine]} produced silent audio for {where}")
    return Utterance(text=text, speaker_id=voice.speaker_id, sample_rate=SAMPLE_RATE, audio=audio)


def synthesize_many(texts: Sequence[str], seed: int, workers: int = 2,
                    engines: Sequence[str] | None = None,
                    log: Callable[[str], None] = print) -> list[Utterance]:
    """Speak every text, the i-th with ``choose_voice(seed, i, engines)``, in order.

    The engines run as separate processes, so a thread pool of ``workers`` keeps that many cores
    busy without pickling audio between processes. The result does not depend on ``workers``.
    Progress goes to ``log``.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    engines = list(engines) if engines is not None else available_engines()
    if not engines:
        raise SourceUnavailable(_no_engine_message())
    for engine in engines:
        require_engine(engine)
    voices = [choose_voice(seed, i, engines) for i in range(len(texts))]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # starts no thread until work is submitted
        spoken = pool.map(synthesize, texts, voices) if workers > 1 else map(synthesize, texts, voices)
        return list(progress(spoken, "speech synthesis", total=len(texts), log=log, unit="utterances"))


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


# --------------------------------------------------------------------------- audio helpers


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample float audio from ``rate`` to ``target`` Hz with a polyphase filter, using the
    exact ratio (22,050 → 16,000 is 160/441). Returns float32."""
    if rate <= 0 or target <= 0:
        raise ValueError(f"sample rates must be positive, got {rate} -> {target}")
    audio = np.asarray(audio, dtype=np.float32)
    if rate == target:
        return audio
    common = math.gcd(rate, target)
    return scipy.signal.resample_poly(audio, target // common, rate // common).astype(np.float32)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV file as mono float32 in [-1, 1] and its sample rate. Integer PCM is scaled by
    its full range; several channels are averaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    return decode_wav(path, f"audio file {path}")


def decode_wav(source, name: str = "the audio") -> tuple[np.ndarray, int]:
    """:func:`read_wav` of a path or a binary file object (``name`` says what it is in errors)."""
    try:
        rate, data = scipy.io.wavfile.read(source)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{name} is not a readable WAV file: {error}") from error
    if data.dtype == np.uint8:
        audio = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        audio = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    else:
        audio = data.astype(np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return audio, int(rate)


def write_wav(path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM (values outside [-1, 1] are clipped) to a path or a
    binary file object."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"write_wav takes mono audio [num_samples], got shape {audio.shape}")
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    scipy.io.wavfile.write(path if hasattr(path, "write") else Path(path), int(sample_rate), pcm)
