"""Transfusion batches: latent shards, the latents and span starts a batch carries, its targets."""

import numpy as np
import pytest
import torch

from mot.data.loader import Loader, LoaderError
from mot.data.packing import IGNORE, TokenizedDocument, document_stream
from mot.data.shards import ShardError, ShardReader, write_shard
from mot.tokenizers.vocab import VocabLayout

# In the Transfusion layout the image modality has one id: the placeholder of a latent patch.
LAYOUT = VocabLayout({"text": 40, "image": 1})
TEXT, PATCH = LAYOUT.id_range("text")[0], LAYOUT.id_range("image")[0]
BOI, EOI = LAYOUT.markers("image")
PATCHES = 4  # a 4x4 latent in 2x2 patches
LATENT_SHAPE = (4, 4, 4)


def latent_documents(count, seed):
    """Documents of text and 1-2 images (either order), each image's latent filled with a value
    that identifies it, so a test can tell which latent landed where."""
    rng = np.random.default_rng(seed)
    streams, latents = [], []
    for i in range(count):
        images = int(rng.integers(1, 3))
        segments = [("text", TEXT + rng.integers(0, 40, rng.integers(1, 6)))]
        for _ in range(images):
            segments.append(("image", np.full(PATCHES, PATCH)))
            segments.append(("text", TEXT + rng.integers(0, 40, rng.integers(1, 4))))
        if rng.random() < 0.5:
            segments.reverse()
        streams.append(document_stream(TokenizedDocument(f"{i}", tuple(segments)), LAYOUT).tokens)
        latents.append(np.stack([np.full(LATENT_SHAPE, 10 * i + k, dtype=np.float32) for k in range(images)]))
    return streams, latents


@pytest.fixture
def reader(tmp_path):
    streams, latents = latent_documents(30, seed=0)
    return ShardReader(write_shard(tmp_path / "scenes", streams, LAYOUT, latents=latents), LAYOUT)


def loader(reader, **kwargs):
    settings = dict(layout=LAYOUT, seq_len=24, batch_rows=3, modality_tower_index=[0, 1], seed=3,
                    bidirectional=["image"], continuous="image")
    settings.update(kwargs)
    return Loader([("scenes", reader, 1.0)], **settings)


def test_each_image_span_comes_with_its_own_latent(reader):
    for batch in (b for _, b in zip(range(10), loader(reader))):
        assert batch.latents.shape[1:] == LATENT_SHAPE and batch.latents.dtype == torch.float32
        assert batch.latent_starts.shape == (len(batch.latents), 2)
        for latent, (row, column) in zip(batch.latents, batch.latent_starts.tolist()):
            assert batch.tokens[row, column - 1] == BOI and batch.tokens[row, column + PATCHES] == EOI
            assert (batch.tokens[row, column:column + PATCHES] == PATCH).all()
            # the latent belongs to the document at that place (the value encodes the document)
            document = batch.doc_ids[_piece_index(batch, row, column)].split(":")[1].split("[")[0]
            assert int(latent[0, 0, 0]) // 10 == int(document)
        # every image span of the batch is there, in row-major order
        starts = [(r, c) for r in range(batch.tokens.shape[0]) for c in range(batch.tokens.shape[1])
                  if batch.tokens[r, c] == BOI]
        assert [(r, c - 1) for r, c in batch.latent_starts.tolist()] == starts


def _piece_index(batch, row, column):
    """Index into ``doc_ids`` of the piece at (row, column)."""
    before = sum(len(set(batch.document_ids[r].tolist()) - {-1}) for r in range(row))
    return before + int(batch.document_ids[row, column])


def test_images_predict_nothing_and_text_around_them_does(reader):
    batch = next(loader(reader))
    tokens, targets = batch.tokens, batch.targets
    for row, column in batch.latent_starts.tolist():
        assert (targets[row, column - 1:column + PATCHES] == IGNORE).all()  # <boi> and the patches
        assert targets[row, column + PATCHES] != IGNORE or tokens[row, column + PATCHES + 1] == LAYOUT.special("<pad>")
        if column >= 2 and batch.document_ids[row, column - 2] == batch.document_ids[row, column]:
            assert targets[row, column - 2] == BOI  # text still learns to open an image
    # images attend within themselves: one span id per image
    for row, column in batch.latent_starts.tolist():
        ids = batch.span_ids[row, column:column + PATCHES]
        assert (ids == ids[0]).all() and ids[0] > 0


def test_documents_cut_between_images_keep_their_latents_in_order(tmp_path):
    # two images of 6 tokens each (markers included) and text: longer than a row of 10
    stream = document_stream(TokenizedDocument("long", (("image", np.full(PATCHES, PATCH)), ("text", TEXT + np.arange(2)),
                                                        ("image", np.full(PATCHES, PATCH)))), LAYOUT).tokens
    latents = np.stack([np.full(LATENT_SHAPE, 1.0), np.full(LATENT_SHAPE, 2.0)]).astype(np.float32)
    reader = ShardReader(write_shard(tmp_path / "long", [stream], LAYOUT, latents=[latents]), LAYOUT)
    batch = next(loader(reader, seq_len=10, batch_rows=2))
    assert batch.latents[:, 0, 0, 0].tolist() == [1.0, 2.0]
    assert batch.latent_starts[:, 0].tolist() == [0, 1]  # one image per row


def test_resume_restores_the_latents_too(reader):
    straight = loader(reader)
    expected = [next(straight) for _ in range(6)]
    first = loader(reader)
    next(first), next(first)
    resumed = loader(reader)
    resumed.load_state_dict(first.state_dict())
    for batch in expected[2:]:
        got = next(resumed)
        assert torch.equal(got.latents, batch.latents) and torch.equal(got.latent_starts, batch.latent_starts)


def test_bad_latents_are_refused(tmp_path):
    streams, latents = latent_documents(3, seed=1)
    with pytest.raises(ShardError, match="spans but"):
        write_shard(tmp_path / "a", streams, LAYOUT, latents=[latents[0][:0], *latents[1:]])
    with pytest.raises(ShardError, match="latent arrays for 3 documents"):
        write_shard(tmp_path / "b", streams, LAYOUT, latents=latents[:2])
    latents[1][0, 0, 0, 0] = np.nan
    with pytest.raises(ShardError, match="NaN"):
        write_shard(tmp_path / "c", streams, LAYOUT, latents=latents)
    assert not (tmp_path / "c").exists()
    plain = ShardReader(write_shard(tmp_path / "plain", streams, LAYOUT), LAYOUT)
    with pytest.raises(LoaderError, match="has no image latents"):
        loader(plain)


def test_a_modified_latent_file_is_reported(tmp_path):
    streams, latents = latent_documents(3, seed=2)
    write_shard(tmp_path / "s", streams, LAYOUT, latents=latents)
    stored = np.load(tmp_path / "s" / "latents.npy")
    stored[0, 0, 0, 0] += 1
    np.save(tmp_path / "s" / "latents.npy", stored)
    with pytest.raises(ShardError, match="latents.npy does not match the hash"):
        ShardReader(tmp_path / "s", LAYOUT)


def test_text_only_shards_of_a_vq_corpus_join_the_transfusion_mixture(tmp_path, reader):
    # prepare writes text-only shards in the corpus's full layout, where images are VQ codes
    vq_layout = VocabLayout({"text": 40, "image": 16})
    text = [document_stream(TokenizedDocument(f"t{i}", (("text", TEXT + np.arange(i + 3)),)), vq_layout).tokens
            for i in range(6)]
    text_reader = ShardReader(write_shard(tmp_path / "text", text, vq_layout), LAYOUT)
    mixed = Loader([("scenes", reader, 1.0), ("text", text_reader, 1.0)], layout=LAYOUT, seq_len=24, batch_rows=3,
                   modality_tower_index=[0, 1], seed=3, bidirectional=["image"], continuous="image")
    batches = [next(mixed) for _ in range(6)]
    assert any(d.startswith("text:") for b in batches for d in b.doc_ids)
    assert sum(len(b.latents) for b in batches) == sum(int((b.tokens == BOI).sum()) for b in batches)
    # a shard that does hold VQ image tokens cannot be read with the latent layout
    scenes_vq = [document_stream(TokenizedDocument("v", (("text", np.array([TEXT])),
                                                        ("image", np.full(4, vq_layout.id_range("image")[0])))),
                                 vq_layout).tokens]
    with pytest.raises(ShardError, match="image has 16 ids here but 1"):
        ShardReader(write_shard(tmp_path / "vq", scenes_vq, vq_layout), LAYOUT)


def test_a_batch_of_text_only_rows_still_has_latents_of_the_corpus_shape(tmp_path, reader):
    vq_layout = VocabLayout({"text": 40, "image": 16})
    text = [document_stream(TokenizedDocument(f"t{i}", (("text", TEXT + np.arange(20)),)), vq_layout).tokens
            for i in range(6)]
    text_reader = ShardReader(write_shard(tmp_path / "text", text, vq_layout), LAYOUT)
    # the text shard drawn almost always: some batches hold no image at all
    mixed = Loader([("scenes", reader, 1e-6), ("text", text_reader, 1.0)], layout=LAYOUT, seq_len=24,
                   batch_rows=2, modality_tower_index=[0, 1], seed=3, bidirectional=["image"], continuous="image")
    batch = next(mixed)
    assert int((batch.tokens == BOI).sum()) == 0
    assert tuple(batch.latents.shape) == (0, *LATENT_SHAPE) and tuple(batch.latent_starts.shape) == (0, 2)
