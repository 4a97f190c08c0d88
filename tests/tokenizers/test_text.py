"""Text tokenizers: exact round trip, deterministic training, save/load/fingerprint, errors."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mot.tokenizers.fingerprint import fingerprint
from mot.tokenizers.text import BPETokenizer, ByteTokenizer, TextTokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A red circle is to the left of a small blue square.",
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer",
    "naïve café, Straße, 日本語のテキスト, emoji 🎉🎉 and tabs\tand\nnewlines",
    "the the the and and of of to to in in",
] * 20


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=400)


# ---- round trip ----


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_round_trip(text):
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_bpe_round_trip(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


@settings(max_examples=50, deadline=None)
@given(texts=st.lists(st.text(), max_size=5))
def test_encode_batch_equals_encode(bpe, texts):
    assert bpe.encode_batch(texts) == [bpe.encode(t) for t in texts]
    assert ByteTokenizer().encode_batch(texts) == [ByteTokenizer().encode(t) for t in texts]


def test_both_follow_the_protocol(bpe):
    assert isinstance(ByteTokenizer(), TextTokenizer)
    assert isinstance(bpe, TextTokenizer)
    assert ByteTokenizer().vocab_size == 256
    assert 256 < bpe.vocab_size <= 400


def test_decode_accepts_numpy_ids(bpe):
    ids = bpe.encode("the red circle")
    assert bpe.decode(np.array(ids)) == "the red circle"


def test_decode_of_a_cut_character_is_replacement_not_error():
    ids = ByteTokenizer().encode("é")  # two bytes
    assert ByteTokenizer().decode(ids[:1]) == "\ufffd"


def test_bpe_compresses_text_it_was_trained_on(bpe):
    assert bpe.bytes_per_token(CORPUS) > 2.0
    assert len(bpe.encode("the the the")) < len("the the the")


# ---- deterministic training, save, load, fingerprint ----


def test_training_is_deterministic(tmp_path):
    first = BPETokenizer.train(CORPUS, vocab_size=400).save(tmp_path / "a")
    second = BPETokenizer.train(iter(CORPUS), vocab_size=400).save(tmp_path / "b")
    for name in ("tokenizer.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert fingerprint(first) == fingerprint(second)


def test_different_corpus_different_fingerprint(bpe):
    other = BPETokenizer.train(CORPUS[:3] * 20, vocab_size=400)
    assert other.fingerprint() != bpe.fingerprint()


def test_save_load_keeps_mapping_and_fingerprint(bpe, tmp_path):
    directory = bpe.save(tmp_path / "tok")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "tokenizer.json"]
    loaded = BPETokenizer.load(directory)
    assert loaded.vocab_size == bpe.vocab_size
    assert loaded.encode_batch(CORPUS[:6]) == bpe.encode_batch(CORPUS[:6])
    assert bpe.fingerprint() == fingerprint(directory) == loaded.fingerprint()
    resaved = loaded.save(tmp_path / "again")
    assert fingerprint(resaved) == bpe.fingerprint()
    assert json.loads((directory / "config.json").read_text())["vocab_size"] == bpe.vocab_size


# ---- errors ----


def test_load_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        BPETokenizer.load(tmp_path / "nowhere")


@pytest.mark.parametrize("missing", ["tokenizer.json", "config.json"])
def test_load_missing_file_names_it(bpe, tmp_path, missing):
    directory = bpe.save(tmp_path / "tok")
    (directory / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        BPETokenizer.load(directory)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("tokenizer.json", "{not json", "tokenizer.json is corrupt"),
        ("tokenizer.json", '{"model": {"type": "BPE"}}', "tokenizer.json is corrupt"),
        ("config.json", "\x00\x01", "config.json is corrupt"),
        ("config.json", '{"kind": "sentencepiece", "format_version": 1}', "kind must be"),
        ("config.json", '{"kind": "byte_level_bpe", "format_version": 99}', "format_version=99"),
        ("config.json", '{"kind": "byte_level_bpe", "format_version": 1, "vocab_size": 3}',
         "vocab_size=3"),
    ],
)
def test_load_corrupt_file_names_path(bpe, tmp_path, name, content, match):
    directory = bpe.save(tmp_path / "tok")
    (directory / name).write_text(content)
    with pytest.raises(ValueError, match=match) as error:
        BPETokenizer.load(directory)
    assert str(directory) in str(error.value)


@pytest.mark.parametrize("make", [ByteTokenizer, None])
@pytest.mark.parametrize("bad", [-1, 10_000])
def test_decode_out_of_range_names_the_id(bpe, make, bad):
    tokenizer = make() if make else bpe
    with pytest.raises(ValueError, match=rf"token id {bad} at position 1 is out of range"):
        tokenizer.decode([0, bad, 1])


def test_decode_non_integer_id(bpe):
    with pytest.raises(TypeError, match="token id 1.5"):
        bpe.decode([1.5])


@pytest.mark.parametrize("make", [ByteTokenizer, None])
def test_encode_lone_surrogate_is_a_clear_error(bpe, make):
    tokenizer = make() if make else bpe
    with pytest.raises(ValueError, match="not encodable as UTF-8.*index 2"):
        tokenizer.encode("ab\ud800c")
    with pytest.raises(TypeError, match="not one string"):
        tokenizer.encode_batch("abc")


def test_train_rejects_bad_input():
    with pytest.raises(ValueError, match="must exceed the 256 byte tokens"):
        BPETokenizer.train(CORPUS, vocab_size=256)
    with pytest.raises(ValueError, match="no text"):
        BPETokenizer.train(["", ""], vocab_size=300)
    with pytest.raises(TypeError, match=r"texts\[1\]: text must be str, got int"):
        BPETokenizer.train(["fine", 7], vocab_size=300)
    with pytest.raises(TypeError, match="not one string"):
        BPETokenizer.train("a whole corpus as one string", vocab_size=300)


def test_bytes_per_token_needs_text(bpe):
    with pytest.raises(ValueError, match="at least one non-empty text"):
        bpe.bytes_per_token(["", ""])
