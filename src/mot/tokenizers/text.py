"""Text tokenizers: text <-> ids in ``[0, vocab_size)``.

Two implementations share the small ``TextTokenizer`` protocol:

- ``ByteTokenizer``: the 256 UTF-8 byte values. No training, no files; for tests and as the
  floor every learned tokenizer must beat (1.0 byte per token).
- ``BPETokenizer``: byte-level BPE trained by mot with HF ``tokenizers``. Because the base
  alphabet is all 256 bytes, every string encodes without an unknown token and decodes back
  exactly. ``BPETokenizer.import_file`` takes a tokenizer made elsewhere instead (a Llama's
  ``tokenizer.json``, so that a corpus speaks the ids of a model to warm-start from): any HF
  ``tokenizers`` model with ids ``0..size-1``, encoded without its special tokens; its round trip
  is as exact as that tokenizer's own (SentencePiece-style ones may map unknown characters to
  ``<unk>``).

Special tokens (BOS, EOS, BOI, ...) are *not* part of these vocabularies: the unified vocabulary
(``mot.tokenizers.vocab``) places the text ids after its specials.
"""

from __future__ import annotations

import itertools
import json
import operator
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence, runtime_checkable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mot.tokenizers.fingerprint import fingerprint as fingerprint_directory

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
_KIND = "byte_level_bpe"
#: a tokenizer made elsewhere and imported as it is (``BPETokenizer.import_file``)
_IMPORTED = "imported"
_FORMAT_VERSION = 1
_BYTE_ALPHABET = 256


@runtime_checkable
class TextTokenizer(Protocol):
    """What the rest of mot needs from a text tokenizer."""

    @property
    def vocab_size(self) -> int:
        """Number of ids; every id produced or accepted lies in ``[0, vocab_size)``."""
        ...

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; ``decode(encode(text)) == text`` for every string."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; bytes that do not form valid UTF-8 become U+FFFD."""
        ...


def _check_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    """Reject any id outside ``[0, vocab_size)``, naming it: HF ``tokenizers`` silently drops
    unknown ids, which would hide a bug in whatever produced them."""
    checked = []
    for position, token_id in enumerate(ids):
        try:  # accepts numpy and torch integer scalars, rejects floats and strings
            token_id = operator.index(token_id)
        except TypeError:
            message = f"token id {token_id!r} at position {position} is not an integer"
            raise TypeError(message) from None
        if not 0 <= token_id < vocab_size:
            raise ValueError(
                f"token id {token_id} at position {position} is out of range [0, {vocab_size})"
            )
        checked.append(token_id)
    return checked


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of ``text``, or a ValueError that says where it cannot be encoded (a lone
    surrogate, e.g. from decoding with ``surrogateescape``)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start : error.end]
        raise ValueError(
            f"text is not encodable as UTF-8: {bad!r} at index {error.start}"
        ) from error


class ByteTokenizer:
    """Ids are the UTF-8 bytes of the text (vocabulary of 256)."""

    vocab_size = _BYTE_ALPHABET

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text`` as ids."""
        return list(_utf8(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` for each text."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of strings, not one string")
        return [self.encode(text) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the bytes ``ids``; invalid UTF-8 becomes U+FFFD (as a model may emit it)."""
        return bytes(_check_ids(ids, self.vocab_size)).decode("utf-8", errors="replace")


def _read_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # HF raises a bare Exception for malformed files
        raise ValueError(f"{path} is corrupt: {error}") from error


def _check_ids_contiguous(tokenizer: Tokenizer, path: Path) -> None:
    size = tokenizer.get_vocab_size()
    if sorted(tokenizer.get_vocab().values()) != list(range(size)):
        raise ValueError(f"{path}: ids are not exactly 0..{size - 1}")


def _empty_bpe() -> Tokenizer:
    """An untrained byte-level BPE pipeline. No normalizer and no prefix space, so that decoding
    gives back exactly the input string."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


class BPETokenizer:
    """Byte-level BPE trained by mot (HF ``tokenizers``); use ``train`` or ``load`` to make one.

    Saved as a directory with ``tokenizer.json`` (HF format) and ``config.json``; a directory
    holds one tokenizer and nothing else, since ``fingerprint`` hashes all of it.
    """

    def __init__(self, tokenizer: Tokenizer, *, fingerprint: str | None = None, kind: str = _KIND):
        self._tokenizer = tokenizer
        self._vocab_size = tokenizer.get_vocab_size()
        self._fingerprint = fingerprint
        self.kind = kind

    # ---- making one ----

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 8192, *, min_frequency: int = 2
    ) -> "BPETokenizer":
        """Train on ``texts`` (any iterable of strings, consumed once).

        ``vocab_size`` counts the 256 byte tokens; mot uses 4k-8k. The result may be smaller
        when the corpus has too few repeated pairs. Training is deterministic: HF's BPE trainer
        has no randomness and breaks count ties by pair, so the same corpus gives a
        byte-identical ``tokenizer.json`` (tested); there is therefore no seed.
        ``min_frequency=2``: a pair seen once is memorisation, not a subword.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {vocab_size!r}")
        if vocab_size <= _BYTE_ALPHABET:
            raise ValueError(
                f"vocab_size={vocab_size} must exceed the {_BYTE_ALPHABET} byte tokens"
            )
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of strings, not one string")
        seen = {"documents": 0, "chars": 0}

        def checked() -> Iterator[str]:
            for index, text in enumerate(texts):
                try:
                    _utf8(text)
                except (TypeError, ValueError) as error:
                    raise type(error)(f"texts[{index}]: {error}") from error
                seen["documents"] += 1
                seen["chars"] += len(text)
                yield text

        tokenizer = _empty_bpe()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
        )
        tokenizer.train_from_iterator(checked(), trainer=trainer)
        if seen["chars"] == 0:
            raise ValueError(f"no text to train on ({seen['documents']} documents, all empty)")
        return cls(tokenizer)

    @classmethod
    def import_file(cls, path: str | Path) -> "BPETokenizer":
        """A tokenizer made elsewhere: a HF ``tokenizer.json`` (or a directory holding one, as a
        Hugging Face model directory does). Its ids must be exactly ``0..size-1``."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path} (a Hugging Face tokenizer.json)")
        tokenizer = _read_tokenizer(path)
        _check_ids_contiguous(tokenizer, path)
        return cls(tokenizer, kind=_IMPORTED)

    def to_str(self) -> str:
        """The HF ``tokenizer.json`` text of this tokenizer."""
        return self._tokenizer.to_str()

    @classmethod
    def load(cls, directory: str | Path) -> "BPETokenizer":
        """Load a tokenizer saved by ``save``; errors name the path and what is wrong with it."""
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"no tokenizer directory at {root}")
        config_path, tokenizer_path = root / CONFIG_FILE, root / TOKENIZER_FILE
        for path in (config_path, tokenizer_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: {root} is not a saved BPETokenizer")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{config_path} is corrupt: {error}") from error
        if not isinstance(config, dict) or config.get("kind") not in (_KIND, _IMPORTED):
            raise ValueError(f"{config_path}: kind must be {_KIND!r} or {_IMPORTED!r}, got {config!r}")
        if config.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{config_path}: format_version={config.get('format_version')!r}, "
                f"this mot reads {_FORMAT_VERSION}"
            )
        tokenizer = _read_tokenizer(tokenizer_path)
        if config["kind"] == _KIND:
            if not isinstance(tokenizer.model, models.BPE):
                raise ValueError(f"{tokenizer_path} holds a {type(tokenizer.model).__name__}, not BPE")
            if not isinstance(tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel):
                # Without byte-level pre-tokenization some strings would not round-trip.
                raise ValueError(f"{tokenizer_path} is not a byte-level BPE (pre-tokenizer differs)")
        size = tokenizer.get_vocab_size()
        if config.get("vocab_size") != size:
            raise ValueError(
                f"{config_path}: vocab_size={config.get('vocab_size')!r} but {tokenizer_path} "
                f"has {size} entries"
            )
        _check_ids_contiguous(tokenizer, tokenizer_path)
        return cls(tokenizer, fingerprint=fingerprint_directory(root), kind=config["kind"])

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` and ``config.json`` into ``directory`` (created if needed).

        Each file is written to a temporary name and renamed, so an interrupted save never leaves
        a half-written tokenizer under the real name.
        """
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        config = {"kind": self.kind, "format_version": _FORMAT_VERSION, "vocab_size": self.vocab_size}
        files = {
            TOKENIZER_FILE: self._tokenizer.to_str(pretty=True),
            CONFIG_FILE: json.dumps(config, indent=2, sort_keys=True) + "\n",
        }
        for name, text in files.items():
            partial = root / f".{name}.partial"
            partial.write_text(text, encoding="utf-8")
            partial.replace(root / name)
        return root

    # ---- identity ----

    @property
    def vocab_size(self) -> int:
        """Number of ids, byte tokens included."""
        return self._vocab_size

    def fingerprint(self) -> str:
        """Content hash of the saved tokenizer (``mot.tokenizers.fingerprint``). For a loaded
        tokenizer it is the hash of the directory it came from; otherwise of a fresh save."""
        if self._fingerprint is None:
            with tempfile.TemporaryDirectory() as scratch:
                self._fingerprint = fingerprint_directory(self.save(scratch))
        return self._fingerprint

    # ---- text <-> ids ----

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` in ``[0, vocab_size)``."""
        _utf8(text)  # HF only says "TextInputSequence must be str" for a lone surrogate
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` for each text, in parallel inside HF ``tokenizers``."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of strings, not one string")
        for text in texts:
            _utf8(text)
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; a byte sequence cut mid-character decodes to U+FFFD there."""
        return self._tokenizer.decode(_check_ids(ids, self.vocab_size), skip_special_tokens=False)

    def bytes_per_token(self, texts: Iterable[str]) -> float:
        """UTF-8 bytes per token over ``texts``: the compression the model sees (higher is
        better; the byte tokenizer scores 1.0)."""
        total_bytes = total_tokens = 0
        iterator = iter(texts)
        # Batches keep memory flat on a whole corpus while HF encodes each batch in parallel.
        while batch := list(itertools.islice(iterator, 1024)):
            total_bytes += sum(len(_utf8(text)) for text in batch)
            total_tokens += sum(len(ids) for ids in self.encode_batch(batch))
        if total_tokens == 0:
            raise ValueError("bytes_per_token needs at least one non-empty text")
        return total_bytes / total_tokens
