"""The document format: what every source yields and what users bring their own data in.

A document is an id, an ordered list of segments and an optional ``meta`` dict. Segments are
``text`` (a non-empty string), ``image`` (a file ``path``, or an inline ``array`` of uint8 pixels,
``[H, W, 3]`` RGB or ``[H, W]`` grey) and ``speech`` (a WAV file ``path``, optionally with the
``speaker`` who said it). On disk a corpus is JSONL, one document per line::

    {"id": "doc-1", "segments": [{"type": "text", "text": "a red circle"},
                                 {"type": "image", "path": "images/1.png"},
                                 {"type": "speech", "path": "audio/1.wav", "speaker": "slt"}],
     "meta": {"source": "mine"}}

Relative paths in a file are relative to that file's directory. In memory, paths are ordinary
paths (relative ones are relative to the working directory); :func:`read_jsonl` makes them
absolute, and :func:`write_jsonl` writes paths under the output directory relative to it, so a
corpus directory can be moved as a whole.

Bad input fails with a :class:`DocumentError` naming the file, line, document, segment and what
is wrong; with ``skip_bad=True`` the document is skipped and counted in a :class:`ReadReport`.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from mot.data.imaging import open_image, rgb_array
from mot.errors import MotError

# Why a document is bad: the keys of ReadReport.skipped, so a manifest can count each kind.
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

# How many error messages a ReadReport keeps verbatim; the counts cover every skipped document.
_EXAMPLES_KEPT = 20


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
        """The segment as it is written to JSONL (see :func:`write_jsonl` for ``relative_to``)."""
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
        """The segment as it is written to JSONL (see :func:`write_jsonl` for ``relative_to``)."""
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


@dataclass
class ReadReport:
    """What reading one JSONL file gave: documents yielded, and skipped ones counted by reason
    (one of :data:`REASONS`), with the first few error messages kept verbatim."""

    path: str
    documents: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def skipped_total(self) -> int:
        """How many documents were skipped, for every reason together."""
        return sum(self.skipped.values())

    def record(self, error: DocumentError) -> None:
        """Count a skipped document."""
        self.skipped[error.reason] += 1
        if len(self.examples) < _EXAMPLES_KEPT:
            self.examples.append(str(error))

    def to_dict(self) -> dict:
        """Plain JSON types, for a manifest."""
        return {"path": self.path, "documents": self.documents,
                "skipped": dict(sorted(self.skipped.items())),
                "skipped_total": self.skipped_total, "examples": list(self.examples)}


class JsonlReader:
    """An iterable over the documents of one JSONL file; see :func:`read_jsonl`."""

    def __init__(self, path: str | os.PathLike, skip_bad: bool, check_files: bool):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"document file not found: {self.path}")
        self.skip_bad, self.check_files = skip_bad, check_files
        self.report = ReadReport(str(self.path))

    def __iter__(self) -> Iterator[Document]:
        self.report = ReadReport(str(self.path))
        base_dir = self.path.parent.absolute()
        first_line_of: dict[str, int] = {}
        with open(self.path, "rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    document = _parse_line(raw, base_dir)
                    if document.id in first_line_of:
                        raise DocumentError(f"duplicate document id (first seen on line "
                                            f"{first_line_of[document.id]})", DUPLICATE_ID,
                                            doc_id=document.id)
                    first_line_of[document.id] = line_number
                    if self.check_files:
                        check_files(document)
                except DocumentError as error:
                    located = error.located(path=self.path, line=line_number,
                                            doc_id=_guess_id(raw))
                    if not self.skip_bad:
                        raise located from None
                    self.report.record(located)
                    continue
                self.report.documents += 1
                yield document


def _parse_line(raw: bytes, base_dir: Path) -> Document:
    try:
        text = raw.decode("utf-8")  # strict: a corpus with broken bytes must not pass silently
    except UnicodeDecodeError as error:
        raise DocumentError(f"line is not valid UTF-8: byte 0x{raw[error.start]:02x} at byte "
                            f"offset {error.start} ({error.reason})", INVALID_UTF8) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        raise DocumentError(f"malformed JSON: {error.msg} at column {error.colno}",
                            MALFORMED_JSON) from None
    except RecursionError:  # thousands of nested [ or {: valid JSON, but no document
        raise DocumentError("malformed JSON: nested too deeply", MALFORMED_JSON) from None
    except ValueError as error:  # an integer of more digits than Python converts (4,300)
        raise DocumentError(f"malformed JSON: {error}", MALFORMED_JSON) from None
    return Document.from_dict(obj, base_dir)


def _guess_id(raw: bytes) -> str | None:
    """The document id of a line that failed, where it can still be read, for the message."""
    try:
        obj = json.loads(raw.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    doc_id = obj.get("id") if isinstance(obj, dict) else None
    return doc_id if isinstance(doc_id, str) and doc_id else None


def read_jsonl(path: str | os.PathLike, skip_bad: bool = False,
               check_files: bool = True) -> JsonlReader:
    """The documents of a JSONL file, read lazily, in order.

    Lines are read as bytes and decoded as strict UTF-8; blank lines are ignored; relative file
    paths are resolved against the file's directory (and made absolute). With ``check_files``
    every image is opened and decoded and every audio file must be a WAV file. A bad document
    raises :class:`DocumentError` (file, line, document id, segment, problem), or with
    ``skip_bad`` is skipped and counted in the returned reader's ``.report``
    (a :class:`ReadReport`, complete once iteration finishes). A missing file raises
    ``FileNotFoundError`` at once.
    """
    return JsonlReader(path, skip_bad, check_files)


def write_jsonl(path: str | os.PathLike, documents: Iterable[Document]) -> int:
    """Write ``documents`` to ``path`` as JSONL, atomically, and return how many were written.

    The lines go to a temporary file next to ``path`` that replaces it only once every line is
    written and flushed to disk, so an interrupted or failed write leaves any previous file
    intact. File paths under the output directory are written relative to it, others absolute.
    Duplicate ids and ``meta`` that is not JSON raise :class:`DocumentError` (nothing written).
    """
    path = Path(path)
    out_dir = path.parent.absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    temporary = out_dir / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open with mode 0o666 lets the umask decide permissions, as for any new file.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    count, seen = 0, set()
    try:
        with os.fdopen(descriptor, "wb") as handle:
            for document in documents:
                if not isinstance(document, Document):
                    raise TypeError(f"item {count} is a {type(document).__name__}, not a Document")
                if document.id in seen:
                    raise DocumentError("duplicate document id", DUPLICATE_ID, path=path,
                                        doc_id=document.id)
                seen.add(document.id)
                try:
                    line = json.dumps(document.to_dict(out_dir), ensure_ascii=False,
                                      separators=(",", ":"), allow_nan=False)
                except (TypeError, ValueError) as error:
                    raise DocumentError(f"meta is not JSON: {error}", BAD_DOCUMENT, path=path,
                                        doc_id=document.id) from None
                handle.write(line.encode("utf-8") + b"\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count
