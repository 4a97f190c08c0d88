"""Caption dropout (Transfusion's classifier-free guidance) and the images that text follows."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from mot.data.caption_dropout import drop_captions
from mot.data.loader import Loader, LoaderError
from mot.data.packing import PAD_DOCUMENT, TokenizedDocument, document_stream, rows_to_batch
from mot.data.shards import ShardReader, write_shard
from tests.data.test_latent_batches import BOI, LATENT_SHAPE, LAYOUT, PATCH, PATCHES, TEXT

BOS = LAYOUT.special("<bos>")
FIELDS = ("tokens", "modality_ids", "positions", "document_ids", "span_ids", "targets", "latents", "latent_starts",
          "latent_before_text")


def kinds(rng):
    """The segments of one document of each kind: caption first (one or two images), image first,
    and caption first with more text after the image."""
    image = ("image", np.full(PATCHES, PATCH))

    def text():
        return ("text", TEXT + rng.integers(0, 40, rng.integers(1, 5)))

    return [[text(), image], [text(), image, text(), image], [image, text()], [text(), image, text()]]


def documents(count, seed, only=None):
    """``count`` documents cycling through the kinds (or only kind ``only``): their segments, and
    a shard-ready stream and latents each; latent value ``10 i + k`` marks image k of document i."""
    rng = np.random.default_rng(seed)
    segments, streams, latents = [], [], []
    for i in range(count):
        chosen = kinds(rng)[i % 4 if only is None else only]
        images = sum(modality == "image" for modality, _ in chosen)
        segments.append(chosen)
        streams.append(document_stream(TokenizedDocument(f"{i}", tuple(chosen)), LAYOUT).tokens)
        latents.append(np.stack([np.full(LATENT_SHAPE, 10 * i + k, dtype=np.float32) for k in range(images)]))
    return segments, streams, latents


def shard(tmp_path, count=24, seed=0, only=None):
    segments, streams, latents = documents(count, seed, only)
    return segments, ShardReader(write_shard(tmp_path / "scenes", streams, LAYOUT, latents=latents), LAYOUT)


def loader(reader, **kwargs):
    settings = dict(layout=LAYOUT, seq_len=24, batch_rows=3, modality_tower_index=[0, 1], seed=3,
                    bidirectional=["image"], continuous="image")
    settings.update(kwargs)
    return Loader([("scenes", reader, 1.0)], **settings)


def same(a, b):
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS) and a.doc_ids == b.doc_ids


def pieces(batch):
    """``(document index, piece start, piece tokens)`` of every piece of a batch, in order."""
    found = []
    for row, owners in zip(batch.tokens, batch.document_ids):
        for owner in sorted(set(owners.tolist()) - {PAD_DOCUMENT}):
            found.append(row[owners == owner].numpy())
    located = []
    for doc_id, tokens in zip(batch.doc_ids, found):
        index, _, cut = doc_id.split(":", 1)[1].partition("[")
        located.append((int(index), int(cut.split(":")[0]) if cut else 0, tokens))
    return located


def without_captions(segments):
    """The rule, on segments: drop every text segment that an image segment follows."""
    following = segments[1:] + [("end", None)]
    return tuple(s for s, after in zip(segments, following) if not (s[0] == "text" and after[0] == "image"))


def test_no_dropout_changes_nothing(tmp_path):
    _, reader = shard(tmp_path)
    plain, zero = loader(reader), loader(reader, caption_dropout=0.0)
    for _ in range(10):
        assert same(next(plain), next(zero))


def test_dropping_every_caption_keeps_images_and_the_text_after_them(tmp_path):
    segments, reader = shard(tmp_path)
    expected = [document_stream(TokenizedDocument(f"{i}", without_captions(s)), LAYOUT).tokens
                for i, s in enumerate(segments)]
    captioned, dropping = loader(reader), loader(reader, caption_dropout=1.0)
    seen_kinds = set()
    for _ in range(30):
        batch = next(dropping)
        latent_values = []
        for index, start, tokens in pieces(batch):
            assert np.array_equal(tokens, expected[index][start:start + tokens.size])
            if start == 0:
                assert tokens[1] == BOI  # no text before the first image
                seen_kinds.add(index % 4)
            first_image = int((expected[index][:start] == BOI).sum())
            latent_values += [10 * index + first_image + k for k in range(int((tokens == BOI).sum()))]
        # every image still has its own latent, in order
        assert batch.latents[:, 0, 0, 0].tolist() == latent_values
        assert batch.latent_before_text.shape == (len(latent_values),)
    assert seen_kinds == {0, 1, 2, 3}
    # the image-first documents are untouched: their caption follows the image
    image_first = next(b for b in captioned if any(i % 4 == 2 and s == 0 for i, s, _ in pieces(b)))
    for index, start, tokens in pieces(image_first):
        if index % 4 == 2:
            assert tokens[1] == BOI and np.array_equal(tokens, expected[index][start:start + tokens.size])


def test_half_the_captions_are_dropped_and_decisions_change_between_epochs(tmp_path):
    _, reader = shard(tmp_path, count=40, only=0)  # caption, image
    halving = loader(reader, caption_dropout=0.5, seq_len=32, batch_rows=4)
    decisions = []  # (document, dropped?), documents are never cut in rows of 32
    while len(decisions) < 300:
        decisions += [(index, bool(tokens[1] == BOI)) for index, _, tokens in pieces(next(halving))]
    assert 0.4 < np.mean([d for _, d in decisions]) < 0.6
    by_document = {}
    for index, dropped in decisions:
        by_document.setdefault(index, set()).add(dropped)
    assert any(len(seen) == 2 for seen in by_document.values())  # a fresh draw each epoch


def test_resume_with_dropout_gives_the_uninterrupted_batches(tmp_path):
    _, reader = shard(tmp_path)
    settings = dict(caption_dropout=0.5, seq_len=10, batch_rows=2)  # rows of 10: long documents are cut
    straight = loader(reader, **settings)
    expected = [next(straight) for _ in range(14)]
    carried = 0
    for stop_after in range(1, 8):
        first = loader(reader, **settings)
        for _ in range(stop_after):
            next(first)
        state = json.loads(json.dumps(first.state_dict()))
        carried += state["pending"] is not None and state["pending"][2] > 0  # a piece past the start
        resumed = loader(reader, **settings)
        resumed.load_state_dict(state)
        for batch in expected[stop_after:stop_after + 6]:
            assert same(next(resumed), batch)
    assert carried


def test_latent_before_text_marks_images_that_text_follows_in_their_piece():
    image = ("image", np.full(PATCHES, PATCH))
    text = ("text", TEXT + np.arange(2))

    def stream(name, *segments):
        images = sum(modality == "image" for modality, _ in segments)
        plain = document_stream(TokenizedDocument(name, segments), LAYOUT)
        return dataclasses.replace(plain, latents=np.zeros((images, *LATENT_SHAPE), dtype=np.float32))

    caption_first, image_first = stream("a", text, image), stream("b", image, text)
    two = stream("c", text, image, text, image)
    cut, alone = stream("d", image, text), stream("e", image)  # d is cut right after <eoi>
    rows = [[(caption_first, 0, 10), (image_first, 0, 10)], [(two, 0, 18)], [(cut, 0, 7), (alone, 0, 8)],
            [(cut, 7, 10)]]
    batch = rows_to_batch(rows, 24, LAYOUT, [0, 1], ["image"], continuous="image")
    assert batch.latent_before_text.dtype == torch.bool
    assert batch.latent_before_text.tolist() == [False, True, True, False, False, False]

    text_only = stream("t", text)
    empty = rows_to_batch([[(text_only, 0, 4)]], 8, LAYOUT, [0, 1], ["image"], continuous="image")
    assert empty.latent_before_text.shape == (0,) and empty.latent_before_text.dtype == torch.bool
    assert rows_to_batch([[(text_only, 0, 4)]], 8, LAYOUT, [0, 1]).latent_before_text is None


def test_drop_captions_removes_only_the_text_before_each_image():
    text = [("text", TEXT + np.arange(n)) for n in (1, 2, 3)]
    image = ("image", np.full(PATCHES, PATCH))
    plain = document_stream(TokenizedDocument("d", (text[0], image, text[1], image, text[2])), LAYOUT)
    plain = dataclasses.replace(plain, latents=np.arange(2.0))
    assert drop_captions(plain, LAYOUT, "image", 0.0, np.random.default_rng(0)) is plain
    dropped = drop_captions(plain, LAYOUT, "image", 1.0, np.random.default_rng(0))
    expected = document_stream(TokenizedDocument("d", (image, image, text[2])), LAYOUT)
    assert np.array_equal(dropped.tokens, expected.tokens) and dropped.spans == expected.spans
    assert dropped.latents is plain.latents and dropped.tokens[0] == BOS


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_bad_dropout_values_are_refused(tmp_path, value):
    _, reader = shard(tmp_path, count=4)
    with pytest.raises(LoaderError, match=f"caption_dropout={value}"):
        loader(reader, caption_dropout=value)


def test_dropout_needs_continuous_images(tmp_path):
    _, reader = shard(tmp_path, count=4)
    with pytest.raises(LoaderError, match="caption_dropout=0.1 needs continuous spans"):
        loader(reader, caption_dropout=0.1, continuous=None, bidirectional=())
