"""Real images that registry packages carry, with captions: sklearn digits, Fashion-MNIST and colour
emoji.

Each source yields documents made of the image (a ``size x size`` RGB uint8 array) followed by
several caption paraphrases, one text segment each, with the label in ``meta``. A source whose
package is not installed raises :class:`SourceUnavailable` naming the package to install.
"""

from __future__ import annotations

import gzip
import unicodedata
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mot.data.documents import Document, ImageSegment, TextSegment
from mot.data.imaging import rgb_array
from mot.data.sources.errors import SourceUnavailable

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
# Noto Color Emoji is a bitmap font with a single strike; FreeType only loads it at this size.
EMOJI_FONT_SIZE = 109

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Fashion-MNIST's classes (label order) as noun phrases that read well in a caption.
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot")
_FASHION_PHRASES = ("a t-shirt", "a pair of trousers", "a pullover", "a dress", "a coat",
                    "a sandal", "a shirt", "a sneaker", "a bag", "an ankle boot")
_FASHION_FILES = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC = 2051, 2049


def _captioned(doc_id: str, pixels: np.ndarray, captions: list[str], meta: dict) -> Document:
    return Document(doc_id, (ImageSegment(array=pixels), *(TextSegment(c) for c in captions)),
                    meta)


def digits(size: int = 32, limit: int | None = None) -> Iterator[Document]:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels, shipped inside the
    scikit-learn package), drawn as dark ink on white and enlarged bicubically to ``size``."""
    from sklearn.datasets import load_digits  # heavy import, only needed by this source

    data = load_digits()
    for index, (image, label) in enumerate(islice(zip(data.images, data.target), limit)):
        ink = np.rint(image * (255 / 16)).astype(np.uint8)  # values are 0..16; 16 = full ink
        pixels = rgb_array(Image.fromarray(255 - ink), size)
        digit, word = int(label), _NUMBER_WORDS[int(label)]
        yield _captioned(f"digits-{index:04d}", pixels,
                         [f"a handwritten digit {digit}",
                          f"the number {word} written by hand",
                          f"a hand-drawn {digit}",
                          f"a small greyscale picture of the digit {word}"],
                         {"source": "sklearn-digits", "index": index, "label": digit})


def _read_idx(path: Path, magic: int, header_bytes: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """The payload of a gzipped IDX file and the dimensions its header gives."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise SourceUnavailable(f"{path} cannot be read ({error}); reinstall the Debian package "
                                "dataset-fashion-mnist") from None
    broken = SourceUnavailable(f"{path} is not a complete IDX file (expected magic {magic} and a "
                               "payload matching the header); reinstall the Debian package "
                               "dataset-fashion-mnist")
    if len(raw) < header_bytes:
        raise broken
    found_magic, *dims = (int(d) for d in np.frombuffer(raw[:header_bytes], dtype=">u4"))
    if found_magic != magic or len(raw) - header_bytes != int(np.prod(dims)):
        raise broken
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes), tuple(dims)


def fashion_mnist(split: str = "train", size: int = 32, limit: int | None = None,
                  root: str | Path = FASHION_MNIST_DIR) -> Iterator[Document]:
    """Fashion-MNIST (60,000 train / 10,000 test 28x28 greyscale photos of clothes, white on
    black) from the Debian package ``dataset-fashion-mnist``, enlarged to ``size``, captioned
    with the class name. Raises :class:`SourceUnavailable` if the package is not installed."""
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be one of {tuple(_FASHION_FILES)}, got {split!r}")
    prefix = Path(root) / _FASHION_FILES[split]
    images_path = Path(f"{prefix}-images-idx3-ubyte.gz")
    labels_path = Path(f"{prefix}-labels-idx1-ubyte.gz")
    for path in (images_path, labels_path):
        if not path.is_file():
            raise SourceUnavailable(f"Fashion-MNIST not found ({path} is missing): install the "
                                    "Debian package dataset-fashion-mnist "
                                    "(apt-get install dataset-fashion-mnist)")
    # IDX layout: images have a 16-byte header (magic, count, rows, cols), labels an 8-byte one.
    pixels, (count, rows, cols) = _read_idx(images_path, _IDX_IMAGES_MAGIC, 16)
    labels, (label_count,) = _read_idx(labels_path, _IDX_LABELS_MAGIC, 8)
    if label_count != count:
        raise SourceUnavailable(f"{images_path} has {count} images but {labels_path} has "
                                f"{label_count} labels; reinstall dataset-fashion-mnist")
    images = pixels.reshape(count, rows, cols)
    for index in range(count if limit is None else min(limit, count)):
        label = int(labels[index])
        phrase = _FASHION_PHRASES[label]
        yield _captioned(f"fashion-mnist-{split}-{index:05d}",
                         rgb_array(Image.fromarray(images[index]), size),
                         [phrase,
                          f"a greyscale photo of {phrase}",
                          f"a small picture of {phrase} on a black background",
                          f"{phrase} from a clothing catalogue"],
                         {"source": "fashion-mnist", "split": split, "index": index,
                          "label": label, "class": FASHION_CLASSES[label]})


# Code points to try: Latin-1 and the symbol blocks (U+2000-U+33FF: arrows, dingbats, ...), and
# the emoji planes (U+1F000-U+1FAFF). ASCII is left out: the font draws #, * and digits only as
# keycap bases, plainly.
_EMOJI_RANGES = ((0x80, 0x3400), (0x1F000, 0x1FB00))
# Names of parts of emoji sequences (skin tones, flag letters, selectors), and CJK ideograph
# names, which say nothing about the picture ("SQUARED CJK UNIFIED IDEOGRAPH-7121").
_ODD_NAME_PARTS = ("REGIONAL INDICATOR", "EMOJI MODIFIER", "EMOJI COMPONENT", "VARIATION SELECTOR",
                   "COMBINING", "IDEOGRAPH", "TAG ")
# In the old symbol blocks BLACK/WHITE mean filled/outlined and HEAVY means bold, not colours
# ("HEAVY BLACK HEART" is a red heart), so these leading words would mislead a caption.
_TYPOGRAPHIC_WORDS = {"black", "white", "heavy"}


def emoji_caption_name(char: str) -> str | None:
    """The caption name of an emoji character (its Unicode name, lower case, without typographic
    prefixes in the old symbol blocks), or ``None`` for characters whose name is unusable."""
    name = unicodedata.name(char, None)
    if name is None or any(part in name for part in _ODD_NAME_PARTS):
        return None
    words = name.lower().split()
    if ord(char) < 0x1F000:
        while len(words) > 1 and words[0] in _TYPOGRAPHIC_WORDS:
            words.pop(0)
    return " ".join(words)


def _emoji_font(font_path: Path) -> ImageFont.FreeTypeFont:
    if not font_path.is_file():
        raise SourceUnavailable(f"colour emoji font not found ({font_path} is missing): install "
                                "the Debian package fonts-noto-color-emoji "
                                "(apt-get install fonts-noto-color-emoji)")
    try:
        # Single code points need no shaping; the basic layout also avoids raqm failing on some.
        font = ImageFont.truetype(str(font_path), EMOJI_FONT_SIZE,
                                  layout_engine=ImageFont.Layout.BASIC)
    except (OSError, ImportError) as error:
        raise SourceUnavailable(f"Pillow cannot load {font_path} ({error}); it needs FreeType "
                                "with colour bitmap support (fonts-noto-color-emoji)") from None
    if _draw_emoji(font, "\U0001F600") is None:
        raise SourceUnavailable(f"Pillow draws nothing with {font_path}: its FreeType lacks "
                                "colour bitmap (CBDT) support")
    return font


def _draw_emoji(font: ImageFont.FreeTypeFont, char: str) -> Image.Image | None:
    """The glyph of ``char`` cropped to its visible pixels and centred in a transparent square,
    or ``None`` when the font has no glyph for it (it then draws nothing)."""
    left, top, right, bottom = font.getbbox(char)
    if right <= left or bottom <= top:
        return None
    canvas = Image.new("RGBA", (right, bottom), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), char, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square


def emoji(size: int = 32, limit: int | None = None,
          font_path: str | Path = EMOJI_FONT) -> Iterator[Document]:
    """Every single-code-point colour emoji of Noto Color Emoji (Debian
    ``fonts-noto-color-emoji``) with a usable Unicode name, on white, resized to ``size``,
    captioned with its name. Raises :class:`SourceUnavailable` if the font is not installed."""
    font = _emoji_font(Path(font_path))
    produced = 0
    for low, high in _EMOJI_RANGES:
        for codepoint in range(low, high):
            if limit is not None and produced >= limit:
                return
            char = chr(codepoint)
            name = emoji_caption_name(char)
            glyph = None if name is None else _draw_emoji(font, char)
            if glyph is None:
                continue
            a_name = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
            yield _captioned(f"emoji-u{codepoint:05x}", rgb_array(glyph, size),
                             [f"{a_name} emoji", f"the {name} emoji", name,
                              f"an emoji picture: {name}"],
                             {"source": "noto-color-emoji", "codepoint": f"U+{codepoint:04X}",
                              "name": unicodedata.name(char)})
            produced += 1
