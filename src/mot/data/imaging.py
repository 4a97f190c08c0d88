"""Turning Pillow images into the arrays every image path in mot uses: RGB, uint8, ``[H, W, 3]``."""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

# Transparent pixels are shown on white, as an image viewer would show them. Converting straight
# to RGB would instead expose whatever colour the transparent pixels happen to store (often black).
_BACKGROUND = (255, 255, 255)


def open_image(path: str | os.PathLike) -> Image.Image:
    """``Image.open(path)``, refusing an image of more than ``Image.MAX_IMAGE_PIXELS`` pixels
    before any pixel is decoded, with ``Image.DecompressionBombError``.

    A PNG of a few hundred bytes can declare 30,000 x 30,000 pixels: decoding it would take
    gigabytes. Pillow raises past twice the limit but only warns between the limit and that, and
    a warning does not stop the decoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombWarning as warning:
            raise Image.DecompressionBombError(str(warning)) from None


def rgb_array(image: Image.Image, size: int | None = None) -> np.ndarray:
    """``image`` as a uint8 ``[H, W, 3]`` RGB array; transparency is flattened onto white.

    With ``size``, the image is centre-cropped to a square and resized to ``size x size``:
    shrinking averages whole pixel areas (box filter: anti-aliased, no ringing halos around hard
    edges), enlarging interpolates bicubically (a smooth picture rather than blocks).
    """
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        image = Image.alpha_composite(canvas, rgba)
    image = image.convert("RGB")
    if size is not None:
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        if side != size:
            resample = Image.Resampling.BOX if side > size else Image.Resampling.BICUBIC
            image = image.resize((size, size), resample=resample)
    return np.asarray(image, dtype=np.uint8).copy()
