"""The files a document's segments point to: check that they open, and load an image's pixels.

Kept apart from the schema (:mod:`mot.data.documents`) because it reads files: building or
parsing a document never touches the disk, and :func:`mot.data.jsonl.read_jsonl` calls
:func:`check_files` only when asked to.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from mot.data.documents import (CORRUPT_AUDIO, CORRUPT_IMAGE, MISSING_AUDIO, MISSING_IMAGE, Document,
                                DocumentError, ImageSegment, SpeechSegment)
from mot.data.imaging import open_image, rgb_array


def _decode_image(path: str, verify: bool) -> Image.Image:
    """Open and fully decode the image file at ``path``; DocumentError if it is missing or bad."""
    if not os.path.isfile(path):
        raise DocumentError(f"image file not found: {path}", MISSING_IMAGE)
    try:
        if verify:  # verify() checks structure and checksums (e.g. PNG CRCs) without decoding
            with open_image(path) as image:
                image.verify()
        image = open_image(path)
        image.load()  # decoding catches truncated pixel data, which verify() can miss
        return image
    # Pillow reports bad files through many exception types (OSError, SyntaxError, ValueError,
    # struct.error, DecompressionBombError ...); every one of them means the file is unusable.
    except Exception as error:  # noqa: BLE001
        raise DocumentError(f"cannot read image file {path}: {error}", CORRUPT_IMAGE) from None


def _check_audio(path: str) -> None:
    if not os.path.isfile(path):
        raise DocumentError(f"audio file not found: {path}", MISSING_AUDIO)
    with open(path, "rb") as handle:
        header = handle.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise DocumentError(f"audio file is not a WAV file (no RIFF/WAVE header): {path}",
                            CORRUPT_AUDIO)


def check_files(document: Document) -> None:
    """Check that every image file opens and decodes and every audio file is a WAV file.
    Raises :class:`DocumentError` naming the document and segment."""
    for index, segment in enumerate(document.segments):
        try:
            if isinstance(segment, ImageSegment) and segment.path is not None:
                _decode_image(segment.path, verify=True).close()
            elif isinstance(segment, SpeechSegment):
                _check_audio(segment.path)
        except DocumentError as error:
            raise error.located(doc_id=document.id,
                                segment=f"segment {index} ({segment.kind})") from None


def load_image(segment: ImageSegment, size: int | None = None) -> np.ndarray:
    """The segment's pixels as uint8 ``[H, W, 3]`` RGB (grey is repeated into three channels,
    transparency is shown on white). With ``size``, centre-cropped to a square and resized to
    ``size x size`` (see :func:`mot.data.imaging.rgb_array`)."""
    if segment.array is not None:
        if size is None:
            pixels = segment.array
            return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels.copy()
        return rgb_array(Image.fromarray(segment.array), size)
    with _decode_image(segment.path, verify=False) as image:
        return rgb_array(image, size)

