"""The document format: what every source yields and what users bring their own data in.

A document is an id, an ordered list of segments and an optional ``meta`` dict. Segments are
``text`` (a non-empty string), ``image`` (a file ``path``, or an inline ``array`` of uint8 pixels,
``[H, W, 3]`` RGB or ``[H, W]`` grey) and ``speech`` (a WAV file ``path``, optionally with the
``speaker`` who said it). On disk a corpus is JSONL, one document per line::

    {"id": "doc-1", "segments": [{"type": "text", "text": "a red circle"},
                                 {"type": "image", "path": "images/1.png"},
                                 {"type": "speech", "path": "audio/1.wav", "speaker": "slt"}],
     "meta": {"source": "mine"}}

This module holds the schema: the segment and document classes, their validation (every bad
value is a :class:`DocumentError` that says what is wrong and, through ``located``, where) and
their JSON form. Reading and writing JSONL files is :mod:`mot.data.jsonl`; opening the image and
audio files that segments point to is :mod:`mot.data.document_files`.

In memory, paths are ordinary paths (relative ones are relative to the working directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mot.errors import MotError

# Why a document is bad: the keys of mot.data.jsonl.ReadReport.skipped, so a manifest can count each kind.
MALFORMED_JSON = "malformed_json"
INVALID_UTF8 = "invalid_utf8"
BAD_DOCUMENT = "bad_document"
DUPLICATE_ID = "duplicate_id"
UNKNOWN_SEGMENT_TYPE = "unknown_segment_type"
BAD_SEGMENT = "bad_segment"
EMPTY_TEXT = "empty_text"
BAD_ARRAY = "bad_array"
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
MISSING_AUDIO = "missing_audio"
CORRUPT_AUDIO = "corrupt_audio"
REASONS = (MALFORMED_JSON, INVALID_UTF8, BAD_DOCUMENT, DUPLICATE_ID, UNKNOWN_SEGMENT_TYPE,
           BAD_SEGMENT, EMPTY_TEXT, BAD_ARRAY, MISSING_IMAGE, CORRUPT_IMAGE, MISSING_AUDIO,
           CORRUPT_AUDIO)


class DocumentError(MotError, ValueError):
    """A document that cannot be used. ``reason`` is one of :data:`REASONS`; ``path``, ``line``,
    ``doc_id`` and ``segment`` locate it (each ``None`` where unknown, e.g. a document built in
    memory has no file or line)."""

    def __init__(self, problem: str, reason: str, *, path: str | os.PathLike | None = None,
                 line: int | None = None, doc_id: str | None = None, segment: str | None = None):
        self.problem, self.reason = problem, reason
        self.path = None if path is None else str(path)
        self.line, self.doc_id, self.segment = line, doc_id, segment
        super().__init__(self.problem)

    def located(self, **context: Any) -> DocumentError:
        """A copy with the given context (``path``, ``line``, ``doc_id``, ``segment``) filled in
        wherever this error does not know it yet."""
        fields = {name: getattr(self, name) for name in ("path", "line", "doc_id", "segment")}
        fields.update({k: v for k, v in context.items() if fields[k] is None})
        return DocumentError(self.problem, self.reason, **fields)

    def __reduce__(self):
        # Errors raised in worker processes are pickled back to the parent; the default
        # reduction would call DocumentError(problem) and lose the reason and the location.
        return type(self), (self.problem, self.reason), self.__dict__

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path if self.line is None else f"{self.path}, line {self.line}")
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.doc_id is not None:
            where.append(f"document {self.doc_id!r}")
        if self.segment is not None:
            where.append(self.segment)
        return ": ".join([", ".join(where), self.problem] if where else [self.problem])


def _require_path(value: Any, kind: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise DocumentError(f"{kind} path must be a non-empty string, got {value!r}", BAD_SEGMENT)
    return value


@dataclass(frozen=True)
class TextSegment:
    """A run of text: a non-empty string that is valid Unicode (encodable as UTF-8)."""

    text: str
    kind: ClassVar[str] = "text"

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise DocumentError(f"text must be a string, got {type(self.text).__name__}",
                                BAD_SEGMENT)
        if not self.text.strip():
            raise DocumentError("text is empty (or only whitespace)", EMPTY_TEXT)
        try:
            self.text.encode("utf-8")
        except UnicodeEncodeError as error:
            # JSON escapes such as "\ud800" decode to lone surrogates, which are not UTF-8.
            raise DocumentError(f"text is not valid UTF-8: {error.reason} at character "
                                f"{error.start}", INVALID_UTF8) from None

    def to_dict(self) -> dict:
        """The segment as it is written to JSONL."""
        return {"type": "text", "text": self.text}


@dataclass(frozen=True, eq=False)
class ImageSegment:
    """An image given by exactly one of ``path`` (a file Pillow can open) or ``array`` (uint8
    pixels ``[H, W, 3]`` RGB or ``[H, W]`` grey; nested lists are accepted and converted).

    The array is stored read-only. Equality compares the path and the pixels.
    """

    path: str | None = None
    array: np.ndarray | None = None
    kind: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        if (self.path is None) == (self.array is None):
            raise DocumentError("an image needs exactly one of 'path' or 'array'", BAD_SEGMENT)
        if self.path is not None:
            object.__setattr__(self, "path", _require_path(self.path, "image"))
        else:
            object.__setattr__(self, "array", _pixel_array(self.array))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageSegment):
            return NotImplemented
        if self.path is not None or other.path is not None:
            return self.path == other.path
        return self.array.shape == other.array.shape and np.array_equal(self.array, other.array)

    def to_dict(self, relative_to: Path | None = None) -> dict:
        """The segment as it is written to JSONL (see :func:`mot.data.jsonl.write_jsonl` for
        ``relative_to``)."""
        if self.path is not None:
            return {"type": "image", "path": _portable_path(self.path, relative_to)}
        return {"type": "image", "array": self.array.tolist()}


def _pixel_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        array = value.copy()
    else:
        try:
            array = np.asarray(value)
        except ValueError as error:  # ragged nested lists
            raise DocumentError(f"image array is not rectangular: {error}", BAD_ARRAY) from None
        if array.dtype.kind not in "iu":
            raise DocumentError(f"image array must hold integers 0..255, got dtype {array.dtype}",
                                BAD_ARRAY)
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DocumentError(f"image array values must lie in 0..255, got {array.min()}.."
                                f"{array.max()}", BAD_ARRAY)
        array = array.astype(np.uint8)
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    if not shape_ok or 0 in array.shape:
        raise DocumentError(f"image array must have shape [H, W, 3] or [H, W] with H, W >= 1, got "
                            f"{list(array.shape)}", BAD_ARRAY)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class SpeechSegment:
    """An utterance: a WAV file ``path`` and, optionally, the ``speaker`` id that said it."""

    path: str
    speaker: str | None = None
    kind: ClassVar[str] = "speech"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _require_path(self.path, "speech"))
        if self.speaker is not None and (not isinstance(self.speaker, str) or not self.speaker):
            raise DocumentError(f"speaker must be a non-empty string, got {self.speaker!r}",
                                BAD_SEGMENT)

    def to_dict(self, relative_to: Path | None = None) -> dict:
        """The segment as it is written to JSONL (see :func:`mot.data.jsonl.write_jsonl` for
        ``relative_to``)."""
        out = {"type": "speech", "path": _portable_path(self.path, relative_to)}
        if self.speaker is not None:
            out["speaker"] = self.speaker
        return out


Segment = TextSegment | ImageSegment | SpeechSegment
SEGMENT_TYPES: dict[str, type] = {"text": TextSegment, "image": ImageSegment,
                                  "speech": SpeechSegment}
_SEGMENT_FIELDS = {"text": {"text"}, "image": {"path", "array"}, "speech": {"path", "speaker"}}
_REQUIRED_SEGMENT_FIELDS = {"text": {"text"}, "image": set(), "speech": {"path"}}
_DOCUMENT_FIELDS = {"id", "segments", "meta"}


def _portable_path(path: str, relative_to: Path | None) -> str:
    """``path`` relative to ``relative_to`` when the file lies under it, else absolute."""
    if relative_to is None:
        return path
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(relative_to).as_posix()
    except ValueError:
        return str(absolute)


@dataclass(frozen=True)
class Document:
    """An id, an ordered, non-empty sequence of segments, and free-form JSON ``meta`` (for
    example the source's name or a ShapeScenes attribute record)."""

    id: str
    segments: tuple[Segment, ...]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise DocumentError(f"'id' must be a non-empty string, got {self.id!r}", BAD_DOCUMENT)
        if isinstance(self.segments, (str, bytes)) or not isinstance(self.segments, Iterable):
            raise DocumentError("'segments' must be a list of segments", BAD_DOCUMENT,
                                doc_id=self.id)
        object.__setattr__(self, "segments", tuple(self.segments))
        if not self.segments:
            raise DocumentError("a document needs at least one segment", BAD_DOCUMENT,
                                doc_id=self.id)
        for index, segment in enumerate(self.segments):
            if not isinstance(segment, (TextSegment, ImageSegment, SpeechSegment)):
                raise DocumentError(f"segment {index} is a {type(segment).__name__}, not a "
                                    "TextSegment, ImageSegment or SpeechSegment", BAD_SEGMENT,
                                    doc_id=self.id)
        if not isinstance(self.meta, dict):
            raise DocumentError(f"'meta' must be a JSON object, got {type(self.meta).__name__}",
                                BAD_DOCUMENT, doc_id=self.id)

    def to_dict(self, relative_to: Path | None = None) -> dict:
        """The document as it is written to JSONL; file paths under ``relative_to`` (a directory)
        are written relative to it. ``meta`` is left out when empty."""
        out: dict[str, Any] = {"id": self.id, "segments": [
            s.to_dict() if isinstance(s, TextSegment) else s.to_dict(relative_to)
            for s in self.segments]}
        if self.meta:
            out["meta"] = self.meta
        return out

    @classmethod
    def from_dict(cls, obj: Any, base_dir: str | os.PathLike | None = None) -> Document:
        """Parse and validate one JSON document. Relative file paths are joined to ``base_dir``
        (the JSONL's directory) when it is given. Raises :class:`DocumentError`."""
        if not isinstance(obj, dict):
            raise DocumentError(f"a document must be a JSON object, got {type(obj).__name__}",
                                MALFORMED_JSON)
        doc_id = obj.get("id")
        known_id = doc_id if isinstance(doc_id, str) and doc_id else None
        unknown = sorted(set(obj) - _DOCUMENT_FIELDS)
        if unknown:
            raise DocumentError(f"unknown document field(s) {unknown}; allowed: "
                                f"{sorted(_DOCUMENT_FIELDS)} (put extra data under 'meta')",
                                BAD_DOCUMENT, doc_id=known_id)
        if known_id is None:
            raise DocumentError(f"'id' must be a non-empty string, got {doc_id!r}", BAD_DOCUMENT)
        raw_segments = obj.get("segments")
        if not isinstance(raw_segments, list):
            raise DocumentError("'segments' must be a list of segments", BAD_DOCUMENT,
                                doc_id=known_id)
        segments = []
        for index, raw in enumerate(raw_segments):
            try:
                segments.append(_segment_from_dict(raw, base_dir))
            except DocumentError as error:
                kind = raw.get("type") if isinstance(raw, dict) else None
                label = f"segment {index}" + (f" ({kind})" if isinstance(kind, str) else "")
                raise error.located(doc_id=known_id, segment=label) from None
        return cls(known_id, tuple(segments), obj.get("meta", {}))


def _segment_from_dict(raw: Any, base_dir: str | os.PathLike | None) -> Segment:
    if not isinstance(raw, dict):
        raise DocumentError(f"a segment must be a JSON object, got {type(raw).__name__}",
                            BAD_SEGMENT)
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in SEGMENT_TYPES:  # a list or a dict is not hashable
        raise DocumentError(f"unknown segment type {kind!r}; known types: {list(SEGMENT_TYPES)}",
                            UNKNOWN_SEGMENT_TYPE)
    fields = set(raw) - {"type"}
    unknown = sorted(fields - _SEGMENT_FIELDS[kind])
    if unknown:
        raise DocumentError(f"unknown field(s) {unknown} in a {kind} segment; allowed: "
                            f"{sorted(_SEGMENT_FIELDS[kind])}", BAD_SEGMENT)
    missing = sorted(_REQUIRED_SEGMENT_FIELDS[kind] - fields)
    if missing:
        raise DocumentError(f"a {kind} segment needs field(s) {missing}", BAD_SEGMENT)
    values = {name: raw[name] for name in fields}
    if base_dir is not None and isinstance(values.get("path"), str) and values["path"]:
        values["path"] = os.path.abspath(os.path.join(base_dir, values["path"]))
    return SEGMENT_TYPES[kind](**values)

