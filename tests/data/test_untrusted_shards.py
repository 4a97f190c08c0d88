"""A shard mot did not write runs no code: an array of Python objects, or a plain pickle, planted
as one of its ``.npy`` files (with the hash in ``shard.json`` updated, so it passes the check) is
refused with a ShardError naming the file, and its payload, which would create a marker file, never runs."""

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from mot.data.shards import META_FILE, ShardError, ShardReader, write_shard
from mot.io import sha256_file
from mot.tokenizers.vocab import VocabLayout

LAYOUT = VocabLayout({"text": 40, "image": 8})


class Touch:
    """Unpickling this creates ``marker``: a stand-in for whatever code a planted file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture
def shard(tmp_path):
    streams = [np.array([LAYOUT.id_range("text")[0] + i, LAYOUT.id_range("text")[0]]) for i in range(3)]
    return write_shard(tmp_path / "shard", streams, LAYOUT)


def plant(shard: Path, name: str, data: bytes) -> Path:
    """Replace ``name`` and record its new hash, as a careful attacker would."""
    path = shard / name
    path.write_bytes(data)
    meta = json.loads((shard / META_FILE).read_text())
    meta["sha256"][name] = sha256_file(path)
    (shard / META_FILE).write_text(json.dumps(meta))
    return path


def object_npy(tmp_path, marker) -> bytes:
    """A valid ``.npy`` of dtype object whose one element is the payload."""
    np.save(tmp_path / "objects.npy", np.array([Touch(marker), 1], dtype=object), allow_pickle=True)
    return (tmp_path / "objects.npy").read_bytes()


@pytest.mark.parametrize("name, reason", [("tokens.npy", "Array can't be memory-mapped: Python objects in dtype"),
                                          ("offsets.npy", "Object arrays cannot be loaded when allow_pickle=False")])
def test_an_object_array_is_refused_and_never_runs(shard, tmp_path, name, reason):
    marker = tmp_path / "ran"
    path = plant(shard, name, object_npy(tmp_path, marker))
    with pytest.raises(ShardError, match=re.escape(f"{path} is not a readable .npy array of numbers: {reason}")):
        ShardReader(shard, LAYOUT)
    assert not marker.exists()


def test_a_pickle_named_like_an_array_is_refused_and_never_runs(shard, tmp_path):
    marker = tmp_path / "ran"
    path = plant(shard, "offsets.npy", pickle.dumps(Touch(marker)))
    with pytest.raises(ShardError, match=re.escape(f"{path} is not a readable .npy array of numbers: "
                                                   "This file contains pickled (object) data")):
        ShardReader(shard, LAYOUT)
    assert not marker.exists()


def test_a_shard_of_plain_arrays_still_reads(shard):
    reader = ShardReader(shard, LAYOUT)
    assert len(reader) == 3 and reader.stream(2).tokens.tolist() == [LAYOUT.id_range("text")[0] + 2,
                                                                     LAYOUT.id_range("text")[0]]
