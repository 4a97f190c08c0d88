"""Files in and out of the pipelines: image files read for captioning, drawn images written as PNG
files and as one grid with their prompts, generated documents written with their images and speech
(units, and a WAV file when there is a vocoder), speech read back as units or from a WAV file."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..config import ConfigError
from ..data.imaging import open_image
from ..io.figures import save_figure


def read_image(path, size: int, name: Optional[str] = None) -> np.ndarray:
    """``uint8 [size, size, 3]``: the file (a path or a binary file object; ``name`` says what it is
    in errors) as RGB, resized (box filter) when it is another size. An image of absurdly many
    pixels is refused before it is decoded (:func:`open_image`)."""
    from PIL import Image

    try:
        with open_image(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BOX)
            return np.array(image, dtype=np.uint8)  # a copy: torch refuses read-only arrays
    # Pillow reports bad files through many exception types (OSError, SyntaxError, ValueError,
    # DecompressionBombError ...); every one of them means the file is unusable.
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"{name or f'--caption {path}'}: not a readable image ({error})") from None


def read_units(path: str | Path) -> np.ndarray:
    """Speech unit ids from a ``.npy`` file (as ``--speak`` writes them): a 1-D integer array; the file
    is read without pickles."""
    try:
        units = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--transcribe {path}: not a .npy file of unit ids ({error})") from None
    if units.ndim != 1 or units.size == 0 or not np.issubdtype(units.dtype, np.integer):
        raise ConfigError(f"--transcribe {path}: must hold a non-empty 1-D array of integer unit ids, "
                          f"not {units.dtype} {list(units.shape)}")
    return units.astype(np.int64)


def read_speech(path: str | Path) -> tuple[str, np.ndarray]:
    """What ``--transcribe`` reads: ``("units", ids)`` from a ``.npy`` file, or ``("audio", float32
    mono 16 kHz)`` from a ``.wav`` file (resampled when recorded at another rate)."""
    from ..data.sources.speech import SAMPLE_RATE, read_wav, resample

    if Path(path).suffix.lower() != ".wav":
        return "units", read_units(path)
    try:
        audio, rate = read_wav(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--transcribe {path}: {error}") from None
    if audio.size == 0 or not np.all(np.isfinite(audio)):
        raise ConfigError(f"--transcribe {path}: holds no samples, or samples that are not finite numbers")
    return "audio", resample(audio, rate, SAMPLE_RATE)


def write_samples(images: np.ndarray, prompts: List[str], per_prompt: int, out: str | Path, label: str) -> Path:
    """Write ``images`` (``uint8 [len(prompts) * per_prompt, S, S, 3]``, each prompt's draws
    together) as ``out/sample-NNN.png`` and ``out/grid.png`` (a column per prompt, the draws
    below, ``label`` beside them); returns the grid's path."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(out / f"sample-{index:03d}.png")
    return out / sample_grid({label: images}, prompts, per_prompt, out / "grid.png")


def sample_grid(images: Dict[str, np.ndarray], prompts: List[str], per_prompt: int, path: Path) -> str:
    """A PNG of ``images`` (label -> ``uint8 [len(prompts) * per_prompt, S, S, 3]``, each prompt's
    draws together): a column per prompt, ``per_prompt`` rows per label. Returns the file's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, per = len(prompts), per_prompt
    rows = len(images) * per
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.9 * rows + 0.8), squeeze=False)
    for block, (label, drawn) in enumerate(images.items()):
        for column in range(columns):
            for draw in range(per):
                axis = axes[block * per + draw, column]
                axis.imshow(drawn[column * per + draw], interpolation="nearest")
                axis.set_xticks([])
                axis.set_yticks([])
                if column == 0:
                    axis.set_ylabel(label if draw == 0 else "", fontsize=10)
                if block == 0 and draw == 0:
                    axis.set_title("\n".join(textwrap.wrap(prompts[column], 22)), fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path, dpi=100).name


def write_document(segments, out: str | Path, stem: str,
                   audio_of: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> str:
    """Write a generated document's images (``stem-image-K.png``) and speech units
    (``stem-speech-K.npy``, and ``stem-speech-K.wav`` made by ``audio_of(units)`` when given) into
    ``out``; return the document as text, each image or speech span as ``[image: path]`` /
    ``[speech: path, N units]`` where it stood."""
    from PIL import Image

    from ..data.sources.speech import write_wav

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts, counts = [], {"image": 0, "speech": 0}
    for kind, value in segments:
        if kind == "text":
            parts.append(value)
            continue
        path = out / f"{stem}-{kind}-{counts[kind]}.{'png' if kind == 'image' else 'npy'}"
        counts[kind] += 1
        if kind == "image":
            Image.fromarray(value).save(path)
            parts.append(f"[image: {path}]")
            continue
        audio = None if audio_of is None else audio_of(np.asarray(value))  # before any file of the span
        np.save(path, np.asarray(value, dtype=np.int64))
        if audio is not None:
            path = path.with_suffix(".wav")
            write_wav(path, audio)
        parts.append(f"[speech: {path}, {len(value)} units]")
    return " ".join(parts)
