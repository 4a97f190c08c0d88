"""Shards and the stateful loader: exact resume, disjoint ranks, mixing, corrupt shards."""

import json

import numpy as np
import pytest
import torch

from mot.data.loader import Loader, LoaderError
from mot.data.packing import TokenizedDocument, document_stream
from mot.data.shards import ShardError, ShardReader, write_shard
from mot.tokenizers.vocab import VocabLayout

LAYOUT = VocabLayout({"text": 40, "image": 16})
TEXT, IMAGE = LAYOUT.id_range("text")[0], LAYOUT.id_range("image")[0]


def make_shard(directory, count, seed, image=True):
    rng = np.random.default_rng(seed)
    streams = []
    for i in range(count):
        segments = [("text", TEXT + rng.integers(0, 40, rng.integers(1, 9)))]
        if image:
            segments.append(("image", IMAGE + rng.integers(0, 16, 4)))
        streams.append(document_stream(TokenizedDocument(f"{i}", tuple(segments)), LAYOUT).tokens)
    return ShardReader(write_shard(directory, streams, LAYOUT), LAYOUT)


@pytest.fixture
def shards(tmp_path):
    return [("captions", make_shard(tmp_path / "captions", 23, seed=1), 3.0),
            ("text", make_shard(tmp_path / "text", 11, seed=2, image=False), 1.0)]


def loader(shards, **kwargs):
    settings = dict(layout=LAYOUT, seq_len=20, batch_rows=3, modality_tower_index=[0, 1], seed=7)
    settings.update(kwargs)
    return Loader(shards, **settings)


def same(a, b):
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in
               ("tokens", "modality_ids", "positions", "document_ids", "span_ids", "targets")) and a.doc_ids == b.doc_ids


@pytest.mark.parametrize("rank,world_size", [(0, 1), (1, 2)])
@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_resume_gives_exactly_the_uninterrupted_batches(shards, stop_after, rank, world_size):
    ranked = dict(rank=rank, world_size=world_size)
    straight = loader(shards, **ranked)
    expected = [next(straight) for _ in range(14)]
    assert min(straight.epochs().values()) >= 1  # both datasets crossed an epoch boundary
    first = loader(shards, **ranked)
    for _ in range(stop_after):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint would store it
    resumed = loader(shards, **ranked)
    resumed.load_state_dict(state)
    for batch in expected[stop_after:]:
        assert same(next(resumed), batch)


def test_batches_have_a_fixed_shape_and_carry_documents_over(shards):
    batches = [b for _, b in zip(range(8), loader(shards, batch_rows=2, seq_len=12))]
    assert all(batch.tokens.shape == (2, 12) for batch in batches)
    # a document cut at a batch end continues at the start of the next batch
    carried = [(a.doc_ids[-1], b.doc_ids[0]) for a, b in zip(batches, batches[1:]) if "[" in b.doc_ids[0]
               and not b.doc_ids[0].endswith("[0:") and not b.doc_ids[0].split("[")[1].startswith("0:")]
    assert carried
    for last, first in carried:
        assert last.split("[")[0] == first.split("[")[0]
        assert last.split(":")[-1].rstrip("]") == first.split("[")[1].split(":")[0]


def test_two_ranks_see_disjoint_documents(shards):
    seen = []
    for rank in (0, 1):
        rank_loader = loader(shards, rank=rank, world_size=2)
        documents = set()
        while rank_loader.epochs()["captions"] == 0:
            batch = next(rank_loader)
            documents |= {d.split("[")[0] for d in batch.doc_ids if d.startswith("captions")}
        seen.append(documents)
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) >= 20  # nearly all 23 captions documents within one epoch


def test_datasets_are_mixed_by_weight(shards):
    mixing = loader(shards, batch_rows=4)
    names = [d.split(":")[0] for _, b in zip(range(60), mixing) for d in b.doc_ids
             if "[" not in d or d.split("[")[1].startswith("0:")]  # count each document once
    share = names.count("captions") / len(names)
    assert 0.65 < share < 0.85  # weights 3:1


def test_the_same_seed_gives_identical_shards(tmp_path):
    make_shard(tmp_path / "a", 10, seed=3)
    make_shard(tmp_path / "b", 10, seed=3)
    for name in ("tokens.npy", "offsets.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_a_corrupt_shard_is_reported(tmp_path):
    make_shard(tmp_path / "s", 5, seed=4)
    tokens = np.load(tmp_path / "s" / "tokens.npy")
    tokens[3] = TEXT
    np.save(tmp_path / "s" / "tokens.npy", tokens)
    with pytest.raises(ShardError, match="does not match the hash"):
        ShardReader(tmp_path / "s", LAYOUT)
    with pytest.raises(ShardError, match="shard.json is missing"):
        ShardReader(tmp_path / "nowhere", LAYOUT)
    with pytest.raises(ShardError, match="cannot be read with vocabulary .* different tokenizers"):
        make_shard(tmp_path / "t", 3, seed=5)
        ShardReader(tmp_path / "t", VocabLayout({"text": 41, "image": 16}))
    with pytest.raises(ShardError, match="already exists"):
        make_shard(tmp_path / "t", 3, seed=5)


def test_bad_settings_and_states(shards):
    with pytest.raises(LoaderError, match="rank=2 is outside"):
        loader(shards, rank=2, world_size=2)
    with pytest.raises(LoaderError, match="weights"):
        loader([(n, r, 0.0) for n, r, _ in shards])
    with pytest.raises(LoaderError, match="fewer than the 12 ranks"):
        loader(shards, world_size=12)
    state = loader(shards).state_dict()
    with pytest.raises(LoaderError, match="seed=7 but this loader has seed=8"):
        loader(shards, seed=8).load_state_dict(state)
    with pytest.raises(LoaderError, match="datasets"):
        loader(shards[:1]).load_state_dict(state)


def test_a_shard_is_read_through_another_layout_that_has_its_tokens(tmp_path):
    """One corpus with speech serves a text-and-image model: ids are translated on read."""
    with_speech = VocabLayout({"text": 40, "image": 16, "speech": 8})
    text_start, image_start = with_speech.id_range("text")[0], with_speech.id_range("image")[0]
    document = TokenizedDocument("d", (("text", text_start + np.arange(5)), ("image", image_start + np.arange(4))))
    write_shard(tmp_path / "captions", [document_stream(document, with_speech).tokens], with_speech)
    stream = ShardReader(tmp_path / "captions", LAYOUT).stream(0)
    expected = document_stream(TokenizedDocument("d", (("text", TEXT + np.arange(5)), ("image", IMAGE + np.arange(4)))),
                               LAYOUT)
    assert np.array_equal(stream.tokens, expected.tokens) and stream.spans == expected.spans

    speech = with_speech.id_range("speech")[0] + np.arange(3)
    spoken = TokenizedDocument("s", (("text", text_start + np.arange(2)), ("speech", speech)))
    write_shard(tmp_path / "speech", [document_stream(spoken, with_speech).tokens], with_speech)
    with pytest.raises(ShardError, match=r"holds \['speech'\] tokens"):
        ShardReader(tmp_path / "speech", LAYOUT)
