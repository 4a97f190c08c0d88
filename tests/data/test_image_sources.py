"""Real-image sources: sklearn digits always; Fashion-MNIST and emoji where their packages are
installed (their parsing and error paths are tested on small files made here)."""

import gzip
import struct

import numpy as np
import pytest

from mot.data.sources.errors import SourceUnavailable
from mot.data.sources.images import (EMOJI_FONT, FASHION_CLASSES, FASHION_MNIST_DIR, digits,
                                     emoji, emoji_caption_name, fashion_mnist)


def _check_captioned_images(docs, size=32):
    assert len({doc.id for doc in docs}) == len(docs)
    for doc in docs:
        image, *captions = doc.segments
        assert image.kind == "image" and image.array.shape == (size, size, 3)
        assert image.array.dtype == np.uint8
        assert len(captions) >= 3 and all(c.kind == "text" and c.text.strip() for c in captions)


def test_digits_are_captioned_with_their_label():
    docs = list(digits())
    assert len(docs) == 1797
    _check_captioned_images(docs[:50])
    for doc in docs[:50]:
        label = doc.meta["label"]
        assert doc.segments[1].text == f"a handwritten digit {label}"
    assert {doc.meta["label"] for doc in docs} == set(range(10))
    # Dark ink on white paper: mostly white, the strokes dark.
    pixels = docs[0].segments[0].array
    assert np.median(pixels) > 200 and pixels.min() < 60
    assert next(digits(size=16)).segments[0].array.shape == (16, 16, 3)
    assert len(list(digits(limit=5))) == 5


def _write_idx(path, magic, dims, payload: bytes):
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(f">{1 + len(dims)}I", magic, *dims) + payload)


def test_fashion_mnist_parses_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 2051, (3, 28, 28), images.tobytes())
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, (3,), bytes([9, 1, 0]))
    docs = list(fashion_mnist("test", root=tmp_path))
    _check_captioned_images(docs)
    assert [doc.meta["class"] for doc in docs] == ["ankle boot", "trouser", "t-shirt"]
    assert [doc.segments[1].text for doc in docs] == ["an ankle boot", "a pair of trousers",
                                                      "a t-shirt"]
    grey = docs[0].segments[0].array
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert len(list(fashion_mnist("test", size=28, root=tmp_path, limit=2))) == 2
    assert np.array_equal(next(fashion_mnist("test", size=28, root=tmp_path))
                          .segments[0].array[..., 0], images[0])


def test_fashion_mnist_reports_missing_or_broken_files(tmp_path):
    with pytest.raises(SourceUnavailable, match="install the Debian package dataset-fashion-mnist"):
        next(fashion_mnist(root=tmp_path))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", 2051, (2, 28, 28), bytes(2 * 28 * 28))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", 2049, (2,), bytes(1))  # one label short
    with pytest.raises(SourceUnavailable, match="labels-idx1-ubyte.gz is not a complete IDX"):
        next(fashion_mnist(root=tmp_path))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0"))
    with pytest.raises(SourceUnavailable, match="not a complete IDX file"):
        next(fashion_mnist(root=tmp_path))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(SourceUnavailable, match="cannot be read"):
        next(fashion_mnist(root=tmp_path))
    with pytest.raises(ValueError, match="split must be one of"):
        next(fashion_mnist("validation", root=tmp_path))


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_installed_fashion_mnist():
    docs = list(fashion_mnist("test", limit=200))
    _check_captioned_images(docs)
    assert {doc.meta["class"] for doc in docs} == set(FASHION_CLASSES)
    assert docs[0].meta["class"] == "ankle boot"  # the first test image of Fashion-MNIST


def test_emoji_caption_names():
    assert emoji_caption_name("\U0001F600") == "grinning face"
    assert emoji_caption_name("\u2764") == "heart"  # HEAVY BLACK HEART is drawn red
    assert emoji_caption_name("\U0001F1E6") is None  # regional indicator (half of a flag)
    assert emoji_caption_name("\U0001F3FB") is None  # skin-tone modifier
    assert emoji_caption_name("\U0001F22F") is None  # SQUARED CJK UNIFIED IDEOGRAPH-6307
    assert emoji_caption_name(chr(0x0378)) is None  # unassigned


def test_emoji_reports_a_missing_font(tmp_path):
    with pytest.raises(SourceUnavailable, match="install the Debian package fonts-noto-color-emoji"):
        next(emoji(font_path=tmp_path / "NotoColorEmoji.ttf"))


@pytest.mark.skipif(not EMOJI_FONT.is_file(),
                    reason="Debian package fonts-noto-color-emoji is not installed")
def test_installed_emoji():
    docs = list(emoji(limit=40))
    _check_captioned_images(docs)
    for doc in docs:
        name = emoji_caption_name(chr(int(doc.meta["codepoint"][2:], 16)))
        assert doc.segments[3].text == name
        assert doc.segments[1].text.endswith(f"{name} emoji")
        pixels = doc.segments[0].array
        assert pixels.std() > 5  # something was drawn on the white background
