"""Corpora as JSONL: round trips, atomic writes, and a clear error for every bad input."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mot.data import documents as D
from mot.data.document_files import check_files, load_image
from mot.data.documents import Document, DocumentError, ImageSegment, SpeechSegment, TextSegment
from mot.data.jsonl import read_jsonl, write_jsonl


def _png(path: Path, mode: str = "RGB", size=(6, 4), colour=(10, 200, 30)) -> Path:
    Image.new(mode, size, colour).save(path)
    return path


def _wav(path: Path) -> Path:
    scipy.io.wavfile.write(path, 16_000, np.zeros(160, dtype=np.int16))
    return path


@pytest.fixture
def corpus(tmp_path):
    """A directory with one image and one WAV file, and documents using every segment kind."""
    (tmp_path / "images").mkdir()
    (tmp_path / "audio").mkdir()
    image = _png(tmp_path / "images" / "a.png")
    wav = _wav(tmp_path / "audio" / "a.wav")
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    docs = [
        Document("mixed", [TextSegment("a green box — ünïcödé ✓"), ImageSegment(path=str(image)),
                           SpeechSegment(str(wav), speaker="espeak:en-us+f2"),
                           ImageSegment(array=rgb)], {"source": "test", "n": [1, 2.5, None]}),
        Document("grey-list", [ImageSegment(array=[[0, 255], [7, 9]]), TextSegment("grey")]),
        Document("speech-only", [SpeechSegment(str(wav))]),
    ]
    return tmp_path, docs


def test_write_then_read_gives_the_same_documents(corpus):
    root, docs = corpus
    path = root / "docs.jsonl"
    assert write_jsonl(path, docs) == 3
    reader = read_jsonl(path)
    assert list(reader) == docs
    assert reader.report.documents == 3 and reader.report.skipped_total == 0
    # Paths inside the corpus directory are stored relative to it, so the directory can move.
    first = json.loads(path.read_bytes().splitlines()[0])
    assert first["segments"][1] == {"type": "image", "path": "images/a.png"}
    assert first["segments"][2]["path"] == "audio/a.wav"
    # Writing what was read gives the same bytes.
    write_jsonl(root / "again.jsonl", reader)
    assert (root / "again.jsonl").read_bytes() == path.read_bytes()


def test_relative_paths_resolve_against_the_file_not_the_working_directory(corpus, monkeypatch):
    root, docs = corpus
    write_jsonl(root / "docs.jsonl", docs)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    image = next(iter(read_jsonl(root / "docs.jsonl"))).segments[1]
    assert Path(image.path) == root / "images" / "a.png"
    assert load_image(image).shape == (4, 6, 3)


def test_paths_outside_the_output_directory_are_written_absolute(corpus):
    root, docs = corpus
    (root / "sub").mkdir()
    write_jsonl(root / "sub" / "docs.jsonl", docs)
    line = json.loads((root / "sub" / "docs.jsonl").read_text().splitlines()[0])
    assert line["segments"][1]["path"] == str(root / "images" / "a.png")
    assert list(read_jsonl(root / "sub" / "docs.jsonl")) == docs


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(corpus):
    root, docs = corpus
    path = root / "docs.jsonl"
    write_jsonl(path, docs)
    before = path.read_bytes()

    def interrupted():
        yield docs[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(path, interrupted())
    with pytest.raises(DocumentError, match="'mixed': duplicate document id"):
        write_jsonl(path, [docs[0], docs[0]])
    with pytest.raises(DocumentError, match="'m': meta is not JSON"):
        write_jsonl(path, [Document("m", [TextSegment("x")], {"array": np.zeros(2)})])
    assert path.read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == ["audio", "docs.jsonl", "images"]


@settings(max_examples=30, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), min_size=1).filter(str.strip))
def test_any_valid_text_survives_a_round_trip(text):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "t.jsonl"
        write_jsonl(path, [Document("t", [TextSegment(text)])])
        assert next(iter(read_jsonl(path))).segments[0].text == text


# Each case: (a JSONL line, what the directory must hold, the reason, part of the problem text,
# the id the message names or None when the line has no readable id).
def _line(doc_id, *segments, **extra) -> bytes:
    return json.dumps({"id": doc_id, "segments": list(segments), **extra}).encode()


BAD_LINES = {
    "unknown segment type": (_line("bad", {"type": "video", "path": "v.mp4"}),
                             D.UNKNOWN_SEGMENT_TYPE, "unknown segment type 'video'", "bad"),
    "empty text": (_line("bad", {"type": "text", "text": " \n"}), D.EMPTY_TEXT,
                   "text is empty", "bad"),
    "non-UTF-8 bytes": (b'{"id": "bad", "segments": [{"type": "text", "text": "caf\xe9"}]}',
                        D.INVALID_UTF8, "not valid UTF-8: byte 0xe9", "bad"),
    "lone surrogate": (b'{"id": "bad", "segments": [{"type": "text", "text": "a\\ud800"}]}',
                       D.INVALID_UTF8, "text is not valid UTF-8", "bad"),
    "missing image": (_line("bad", {"type": "image", "path": "nope.png"}), D.MISSING_IMAGE,
                      "image file not found", "bad"),
    "corrupt image": (_line("bad", {"type": "image", "path": "garbage.png"}), D.CORRUPT_IMAGE,
                      "cannot read image file", "bad"),
    "truncated image": (_line("bad", {"type": "image", "path": "truncated.png"}),
                        D.CORRUPT_IMAGE, "cannot read image file", "bad"),
    "missing audio": (_line("bad", {"type": "speech", "path": "nope.wav"}), D.MISSING_AUDIO,
                      "audio file not found", "bad"),
    "audio that is not WAV": (_line("bad", {"type": "speech", "path": "garbage.png"}),
                              D.CORRUPT_AUDIO, "not a WAV file", "bad"),
    "array with 4 channels": (_line("bad", {"type": "image", "array": [[[1, 2, 3, 4]]]}),
                              D.BAD_ARRAY, "got [1, 1, 4]", "bad"),
    "array out of range": (_line("bad", {"type": "image", "array": [[0, 256]]}), D.BAD_ARRAY,
                           "0..256", "bad"),
    "array of floats": (_line("bad", {"type": "image", "array": [[0.5, 1]]}), D.BAD_ARRAY,
                        "dtype float64", "bad"),
    "ragged array": (_line("bad", {"type": "image", "array": [[1, 2], [3]]}), D.BAD_ARRAY,
                     "not rectangular", "bad"),
    "image with path and array": (_line("bad", {"type": "image", "path": "a", "array": [[1]]}),
                                  D.BAD_SEGMENT, "exactly one of 'path' or 'array'", "bad"),
    "unknown segment field": (_line("bad", {"type": "text", "text": "x", "lang": "en"}),
                              D.BAD_SEGMENT, "unknown field(s) ['lang']", "bad"),
    "malformed JSON": (b'{"id": "bad", "segments": [', D.MALFORMED_JSON, "malformed JSON", None),
    "not an object": (b'["bad"]', D.MALFORMED_JSON, "must be a JSON object", None),
    "missing id": (b'{"segments": [{"type": "text", "text": "x"}]}', D.BAD_DOCUMENT,
                   "'id' must be a non-empty string", None),
    "no segments": (_line("bad"), D.BAD_DOCUMENT, "at least one segment", "bad"),
    "unknown document field": (_line("bad", {"type": "text", "text": "x"}, source="me"),
                               D.BAD_DOCUMENT, "unknown document field(s) ['source']", "bad"),
    "duplicate id": (_line("good-1", {"type": "text", "text": "again"}), D.DUPLICATE_ID,
                     "duplicate document id (first seen on line 1)", "good-1"),
}


def _bad_files(root: Path) -> None:
    (root / "garbage.png").write_bytes(b"this is not an image")
    _png(root / "full.png", size=(64, 64))
    data = (root / "full.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])


def _corpus_with(root: Path, bad_line: bytes) -> Path:
    """good-1, a blank line, the bad line (line 3), good-2."""
    _bad_files(root)
    path = root / "docs.jsonl"
    good = [_line(f"good-{i}", {"type": "text", "text": "fine"}) for i in (1, 2)]
    path.write_bytes(b"\n".join([good[0], b"", bad_line, good[1]]) + b"\n")
    return path


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_input_names_file_line_document_and_problem(tmp_path, case):
    bad_line, reason, problem, doc_id = BAD_LINES[case]
    path = _corpus_with(tmp_path, bad_line)
    with pytest.raises(DocumentError) as caught:
        list(read_jsonl(path))
    error = caught.value
    message = str(error)
    assert error.reason == reason and error.line == 3 and error.doc_id == doc_id
    assert f"{path}, line 3" in message and problem in message
    if doc_id is not None:
        assert f"document {doc_id!r}" in message
    if reason not in (D.MALFORMED_JSON, D.BAD_DOCUMENT, D.DUPLICATE_ID, D.INVALID_UTF8):
        assert "segment 0" in message


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_skip_bad_skips_and_counts_the_bad_document(tmp_path, case):
    bad_line, reason, problem, _ = BAD_LINES[case]
    reader = read_jsonl(_corpus_with(tmp_path, bad_line), skip_bad=True)
    assert [doc.id for doc in reader] == ["good-1", "good-2"]
    assert reader.report.skipped == {reason: 1} and reader.report.documents == 2
    assert "line 3" in reader.report.examples[0] and problem in reader.report.examples[0]


def test_skip_bad_counts_every_reason_in_one_file(tmp_path):
    _bad_files(tmp_path)
    path = tmp_path / "docs.jsonl"
    lines = [_line("good-1", {"type": "text", "text": "ok"})] + [
        line.replace(b'"bad"', f'"bad-{i}"'.encode()) for i, (line, *_) in
        enumerate(BAD_LINES[case] for case in sorted(BAD_LINES))]
    path.write_bytes(b"\n".join(lines))
    reader = read_jsonl(path, skip_bad=True)
    assert [doc.id for doc in reader] == ["good-1"]
    expected = {}
    for line, reason, *_ in BAD_LINES.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert reader.report.skipped == expected
    summary = reader.report.to_dict()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["skipped_total"] == len(BAD_LINES) and summary["documents"] == 1
    assert set(expected) <= set(D.REASONS)


def test_files_are_not_opened_when_check_files_is_off(tmp_path):
    path = _corpus_with(tmp_path, BAD_LINES["missing image"][0])
    assert len(list(read_jsonl(path, check_files=False))) == 3
    with pytest.raises(DocumentError, match="segment 0 \\(image\\): image file not found"):
        check_files(list(read_jsonl(path, check_files=False))[1])


def test_a_missing_document_file_fails_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl", skip_bad=True)



def test_write_jsonl_makes_files_with_ordinary_permissions(tmp_path):
    path = tmp_path / "new" / "docs.jsonl"
    write_jsonl(path, [Document("d", [TextSegment("x")])])
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

