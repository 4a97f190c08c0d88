"""Corpora on disk: documents (:mod:`mot.data.documents`) as JSONL, one per line.

Relative paths in a file are relative to that file's directory: :func:`read_jsonl` makes them
absolute, and :func:`write_jsonl` writes paths under the output directory relative to it, so a
corpus directory can be moved as a whole.

Bad input fails with a :class:`~mot.data.documents.DocumentError` naming the file, line,
document, segment and what is wrong; with ``skip_bad=True`` the document is skipped and counted
in a :class:`ReadReport`.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mot.data.document_files import check_files
from mot.data.documents import BAD_DOCUMENT, DUPLICATE_ID, INVALID_UTF8, MALFORMED_JSON, Document, DocumentError

# How many error messages a ReadReport keeps verbatim; the counts cover every skipped document.
_EXAMPLES_KEPT = 20


@dataclass
class ReadReport:
    """What reading one JSONL file gave: documents yielded, and skipped ones counted by reason
    (one of :data:`~mot.data.documents.REASONS`), with the first few error messages kept verbatim."""

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
