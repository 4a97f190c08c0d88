"""A checkpoint mot did not write runs no code: a pickle planted in ``.metadata``, in a value of
a ``.distcp`` file or in ``rank-NNNNN.pt`` (with ``complete.json`` updated, so every hash checks
out) is refused with a clear error, and its payload, which would create a marker file, never runs."""

import dataclasses
import io
import json
import operator
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.metadata import MetadataIndex

from mot.io import CheckpointError
from mot.io import sha256_file
from mot.model import build_model
from mot.runs.checkpoints import MARKER, CheckpointManager, load_model_optimizer_state, model_optimizer_state
from mot.runs.dcp_reader import METADATA_FILE, UnsafeCheckpointError, read_metadata_file
from mot.runs.model import export_run, load_run_model
from mot.runs.recipe import load_recipe
from mot.runs.run_dir import prepare_run_dir
from mot.train.optim import build_optimizer

from tests.helpers import random_batch

STEP = 2


class Touch:
    """Unpickling this creates ``marker``: a stand-in for whatever code a planted file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


class TouchThenMetadata:
    """Unpickling this creates ``marker`` and then gives the real metadata, so that DCP, which
    gets what it expects, would load the checkpoint as if nothing had happened."""

    def __init__(self, marker: Path, metadata):
        self.marker, self.metadata = marker, metadata

    def __reduce__(self):
        return operator.getitem, ((Touch(self.marker), self.metadata), 1)


def quiet(_):
    pass


def build(seed, run_dir=None):
    """A run's recipe, and its 1-layer model and AdamW after one step; with ``run_dir``, also the
    run directory with its ``config.yaml``."""
    config = load_recipe(None, ["name=run", f"out_dir={run_dir or '.'}", "model.vocab_size=64", "model.d_model=16",
                                "model.n_layers=1", "model.n_heads=2", "model.max_seq_len=32", "data.seq_len=32"])
    if run_dir is not None:
        prepare_run_dir(config)
    torch.manual_seed(seed)
    model = build_model(config.model)
    optimizer = build_optimizer(model, config.optim)
    tokens, modalities = random_batch(model.config, seed=seed)
    model(tokens, modalities).logits.logsumexp(-1).mean().backward()
    optimizer.step()
    return config, model, optimizer


@pytest.fixture
def run(tmp_path):
    """A run directory with one checkpoint (step 2, with a per-rank file); gives the run
    directory, the checkpoint, the trained model and its optimizer."""
    config, model, optimizer = build(seed=0, run_dir=tmp_path)
    manager = CheckpointManager(config.run_dir / "checkpoints")
    checkpoint = manager.save(STEP, model_optimizer_state(model, optimizer), per_rank={"rank": 0, "draws": 5})
    return config.run_dir, checkpoint, model, optimizer


def rehash(checkpoint: Path, name: str) -> None:
    """Record the file's new size and SHA-256 in ``complete.json``, as a careful attacker would."""
    info = json.loads((checkpoint / MARKER).read_text())
    info["files"][name] = {"bytes": (checkpoint / name).stat().st_size, "sha256": sha256_file(checkpoint / name)}
    (checkpoint / MARKER).write_text(json.dumps(info))


def plant(checkpoint: Path, name: str, data: bytes) -> None:
    (checkpoint / name).write_bytes(data)
    rehash(checkpoint, name)


def load(checkpoint: Path, seed: int = 1):
    """Load ``checkpoint`` with a fresh manager (so its hashes are checked) into a fresh model."""
    _, model, optimizer = build(seed)
    state = model_optimizer_state(model, optimizer)
    per_rank = CheckpointManager(checkpoint.parent).load(checkpoint, state)
    load_model_optimizer_state(model, optimizer, state)
    return model, optimizer, per_rank


def test_a_normal_checkpoint_still_loads_bit_exactly(run):
    _, checkpoint, model, optimizer = run
    fresh, fresh_optimizer, per_rank = load(checkpoint)
    assert per_rank == {"rank": 0, "draws": 5}
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(value, loaded["state"][index][key]), (index, key)


def test_a_payload_in_the_metadata_is_refused_and_never_runs(run, tmp_path):
    _, checkpoint, _, _ = run
    marker = tmp_path / "ran"
    plant(checkpoint, METADATA_FILE, pickle.dumps(Touch(marker)))
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f"{checkpoint / METADATA_FILE}: refused to load "
                                                              "the global pathlib.Path.touch")):
        load(checkpoint)
    assert not marker.exists()


def test_a_payload_that_returns_the_real_metadata_is_refused_too(run, tmp_path):
    _, checkpoint, _, _ = run
    marker = tmp_path / "ran"
    metadata = read_metadata_file(checkpoint / METADATA_FILE)
    plant(checkpoint, METADATA_FILE, pickle.dumps(TouchThenMetadata(marker, metadata)))
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load the global _operator\.getitem"):
        load(checkpoint)
    assert not marker.exists()


def test_export_and_load_run_model_refuse_a_planted_metadata(run, tmp_path):
    run_dir, checkpoint, _, _ = run
    marker = tmp_path / "ran"
    plant(checkpoint, METADATA_FILE, pickle.dumps(Touch(marker)))
    with pytest.raises(UnsafeCheckpointError, match="refused to load the global"):
        load_run_model(run_dir, log=quiet)
    with pytest.raises(UnsafeCheckpointError, match="refused to load the global"):
        export_run(run_dir, tmp_path / "release", log=quiet)
    assert not marker.exists() and not (tmp_path / "release").exists()


def test_a_payload_among_the_values_of_a_distcp_file_is_refused_and_never_runs(run, tmp_path):
    """DCP stores a value that is not a tensor (a learning rate) as a ``torch.save`` pickle in a
    ``.distcp`` file; here the metadata points that value at a planted pickle appended to the file."""
    _, checkpoint, _, _ = run
    marker = tmp_path / "ran"
    metadata = read_metadata_file(checkpoint / METADATA_FILE)
    index = MetadataIndex("optimizer.param_groups.0.lr")
    stored = metadata.storage_data[index]
    payload = io.BytesIO()
    torch.save(Touch(marker), payload)
    data_file = checkpoint / stored.relative_path
    offset = data_file.stat().st_size
    with open(data_file, "ab") as handle:
        handle.write(payload.getvalue())
    metadata.storage_data[index] = dataclasses.replace(stored, offset=offset, length=len(payload.getvalue()))
    plant(checkpoint, METADATA_FILE, pickle.dumps(metadata))
    rehash(checkpoint, stored.relative_path)
    refusal = (f"{checkpoint}: loading failed: UnsafeCheckpointError: {stored.relative_path}: refused to load "
               "the value of 'optimizer.param_groups.0.lr': Unsupported global: GLOBAL getattr")
    with pytest.raises(CheckpointError, match=re.escape(refusal)):
        load(checkpoint)
    assert not marker.exists()


def test_a_payload_in_the_per_rank_file_is_refused_and_never_runs(run, tmp_path):
    _, checkpoint, _, _ = run
    marker = tmp_path / "ran"
    payload = io.BytesIO()
    torch.save({"rank": 0, "draws": Touch(marker)}, payload)
    plant(checkpoint, "rank-00000.pt", payload.getvalue())
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f"{checkpoint / 'rank-00000.pt'}: refused to load "
                                                              "it: Unsupported global")):
        load(checkpoint)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../outside.distcp", "/etc/hostname", "sub/file.distcp", ".."])
def test_metadata_naming_a_data_file_outside_the_checkpoint_is_refused(run, name):
    """A planted path would make the load read any file of the machine as checkpoint data."""
    _, checkpoint, _, _ = run
    metadata = read_metadata_file(checkpoint / METADATA_FILE)
    index = next(iter(metadata.storage_data))
    metadata.storage_data[index] = dataclasses.replace(metadata.storage_data[index], relative_path=name)
    plant(checkpoint, METADATA_FILE, pickle.dumps(metadata))
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f"names the data file {name!r}, which is not a file")):
        load(checkpoint)


def test_metadata_that_is_not_dcp_metadata_or_is_truncated_is_a_checkpoint_error(run):
    _, checkpoint, _, _ = run
    original = (checkpoint / METADATA_FILE).read_bytes()
    plant(checkpoint, METADATA_FILE, pickle.dumps({"state_dict_metadata": {}}))
    with pytest.raises(CheckpointError, match=r"\.metadata holds a dict, not DCP metadata"):
        load(checkpoint)
    plant(checkpoint, METADATA_FILE, original[:len(original) // 2])
    with pytest.raises(CheckpointError, match=r"\.metadata is unreadable \("):
        load(checkpoint)
