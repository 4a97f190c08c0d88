"""Training checkpoints: exact round trip, pruning, skipping partial or corrupt ones, clear errors."""

import json
import warnings

import pytest
import torch

from mot import ModelConfig
from mot.io import CheckpointError
from mot.model import build_model
from mot.runs.checkpoints import (MARKER, CheckpointManager, load_model_optimizer_state,
                                  model_optimizer_state)
from mot.train.rng import capture_rng_state

from tests.helpers import random_batch


def trained(seed=0, steps=3, d_model=32):
    """A tiny model and its AdamW after a few steps (so the optimizer has moments and a step count)."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(vocab_size=64, d_model=d_model, n_layers=2, n_heads=2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps):
        tokens, modalities = random_batch(model.config, seed=step)
        optimizer.zero_grad()
        model(tokens, modalities).logits.logsumexp(-1).mean().backward()
        optimizer.step()
    return model, optimizer


def app_state(model, optimizer, step=0):
    return {**model_optimizer_state(model, optimizer), "step": step, "tokens_seen": 0.0}


def save(manager, step, seed=0):
    model, optimizer = trained(seed)
    return manager.save(step, app_state(model, optimizer, step), per_rank={"rank": 0, "seed": seed})


def assert_same_optimizer_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for index, state in sa["state"].items():
        assert state.keys() == sb["state"][index].keys()
        for key, value in state.items():
            assert torch.equal(value, sb["state"][index][key]), (index, key)


def test_round_trip_is_bitwise_exact(tmp_path):
    manager = CheckpointManager(tmp_path)
    model, optimizer = trained(seed=0)
    rng = capture_rng_state()
    path = manager.save(7, app_state(model, optimizer, step=7) | {"tokens_seen": 123.5},
                        per_rank={"rank": 0, "loader": {"draws": 5, "cursors": [[1, 2]]}, "rng": rng})
    assert path == tmp_path / "step-00000007" and (path / MARKER).is_file()

    fresh_model, fresh_optimizer = trained(seed=1, steps=1)
    state = app_state(fresh_model, fresh_optimizer)
    per_rank = manager.load(path, state)
    load_model_optimizer_state(fresh_model, fresh_optimizer, state)

    assert state["step"] == 7 and state["tokens_seen"] == 123.5
    assert per_rank["loader"] == {"draws": 5, "cursors": [[1, 2]]}
    assert torch.equal(per_rank["rng"]["torch"], rng["torch"])
    for (name, a), (_, b) in zip(model.named_parameters(), fresh_model.named_parameters()):
        assert torch.equal(a, b), name
    assert_same_optimizer_state(optimizer, fresh_optimizer)
    # and training goes on identically
    tokens, modalities = random_batch(model.config, seed=9)
    for m, o in ((model, optimizer), (fresh_model, fresh_optimizer)):
        o.zero_grad()
        m(tokens, modalities).logits.logsumexp(-1).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(a, b)


def test_marker_records_step_world_size_and_every_file(tmp_path):
    path = save(CheckpointManager(tmp_path), 3)
    info = json.loads((path / MARKER).read_text())
    assert info["step"] == 3 and info["world_size"] == 1
    assert set(info["files"]) == {p.name for p in path.iterdir()} - {MARKER}
    assert {".metadata", "rank-00000.pt"} <= set(info["files"])
    assert all(len(entry["sha256"]) == 64 for entry in info["files"].values())


def test_without_a_process_group_nothing_is_warned(tmp_path):
    manager = CheckpointManager(tmp_path)
    model, optimizer = trained()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = manager.save(1, app_state(model, optimizer))
        assert manager.load(path, app_state(model, optimizer)) is None  # no per_rank was saved


def test_only_the_newest_keep_last_are_kept(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30, 40):
        save(manager, step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000030", "step-00000040"]
    assert manager.latest() == (tmp_path / "step-00000040", [])


def test_multiples_of_keep_every_are_never_pruned(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=1, keep_every=20)
    for step in (10, 20, 30, 40, 50):
        save(manager, step)
    assert manager.steps() == [20, 40, 50]
    assert manager.verified(20) == tmp_path / "step-00000020"


def test_a_step_without_a_good_checkpoint_is_named(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    for step in (10, 20):
        save(manager, step)
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 15; it has steps \[10, 20\]"):
        manager.verified(15)
    (tmp_path / "step-00000010" / "complete.json").unlink()
    with pytest.raises(CheckpointError, match="step-00000010: no complete.json"):
        manager.verified(10)


def test_unfinished_saves_of_earlier_steps_are_cleared_by_the_next_save(tmp_path):
    manager = CheckpointManager(tmp_path)
    (tmp_path / "step-00000005.tmp").mkdir(parents=True)
    (tmp_path / "step-00000050.tmp").mkdir()
    save(manager, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000010", "step-00000050.tmp"]


def test_an_interrupted_save_is_ignored_and_reported(tmp_path):
    manager = CheckpointManager(tmp_path)
    good = save(manager, 1)
    interrupted = tmp_path / "step-00000002.tmp"
    interrupted.mkdir()
    (interrupted / "__0_0.distcp").write_bytes(b"half a file")
    path, problems = manager.latest()
    assert path == good
    assert len(problems) == 1 and "step-00000002.tmp" in problems[0] and "unfinished" in problems[0]


def test_a_directory_without_marker_is_skipped(tmp_path):
    manager = CheckpointManager(tmp_path)
    good = save(manager, 1)
    (save(manager, 2) / MARKER).unlink()
    path, problems = manager.latest()
    assert path == good and "no complete.json" in problems[0]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_file_makes_latest_fall_back_to_the_previous_checkpoint(tmp_path, damage):
    manager = CheckpointManager(tmp_path)
    previous = save(manager, 1, seed=0)
    newest = save(manager, 2, seed=1)
    target = newest / "__0_0.distcp"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    else:
        target.unlink()
    path, problems = manager.latest()
    assert path == previous
    assert len(problems) == 1 and str(target) in problems[0]
    expected = {"truncate": "truncated", "flip": "SHA-256", "delete": "missing"}[damage]
    assert expected in problems[0]
    # loading the damaged one by name is refused too
    model, optimizer = trained()
    with pytest.raises(CheckpointError, match="__0_0.distcp"):
        manager.load(newest, app_state(model, optimizer))


def test_latest_of_an_empty_or_missing_directory_is_none(tmp_path):
    assert CheckpointManager(tmp_path / "nothing").latest() == (None, [])
    assert CheckpointManager(tmp_path).latest() == (None, [])


def test_saving_a_step_again_replaces_it(tmp_path):
    manager = CheckpointManager(tmp_path)
    save(manager, 4, seed=0)
    path = save(manager, 4, seed=1)
    model, optimizer = trained()
    assert manager.load(path, app_state(model, optimizer))["seed"] == 1
    assert manager.latest() == (path, [])


def test_another_architecture_is_a_clear_error_and_changes_nothing(tmp_path):
    manager = CheckpointManager(tmp_path)
    path = save(manager, 1)
    model, optimizer = trained(seed=5, d_model=48)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(CheckpointError, match=r"does not fit .*wrong shape or type: model\.embed\.weight saved \[64, 32\], "
                                              r"expected \[64, 48\]"):
        manager.load(path, app_state(model, optimizer))
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())


def test_a_checkpoint_of_a_deeper_model_is_rejected(tmp_path):
    manager = CheckpointManager(tmp_path)
    torch.manual_seed(0)
    deeper = build_model(ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=2))
    path = manager.save(1, {"model": model_optimizer_state(deeper, torch.optim.AdamW(deeper.parameters()))["model"]})
    model, _ = trained()
    with pytest.raises(CheckpointError, match=r"not in this run's state: model\.blocks\.2\."):
        manager.load(path, {"model": model.state_dict()})


def test_a_checkpoint_of_another_world_size_is_rejected(tmp_path):
    manager = CheckpointManager(tmp_path)
    path = save(manager, 1)
    marker = path / MARKER
    info = json.loads(marker.read_text())
    info["world_size"] = 2
    marker.write_text(json.dumps(info))
    model, optimizer = trained()
    with pytest.raises(CheckpointError, match=r"complete\.json: saved by 2 ranks, this run has 1"):
        manager.load(path, app_state(model, optimizer))


def test_invalid_arguments_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="keep_last=0"):
        CheckpointManager(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match="keep_every=-1"):
        CheckpointManager(tmp_path, keep_every=-1)
    with pytest.raises(ValueError, match="step=-1"):
        CheckpointManager(tmp_path).path_for(-1)
    with pytest.raises(CheckpointError, match="not a complete checkpoint directory"):
        CheckpointManager(tmp_path).load(tmp_path / "step-00000001.tmp", {})


def test_a_failed_save_is_a_checkpoint_error_and_leaves_no_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path)
    good = save(manager, 1)
    with pytest.raises(CheckpointError, match=r"step-00000002\.tmp: saving failed"):
        manager.save(2, {"unpicklable": lambda: None})
    path, problems = manager.latest()
    assert path == good and "step-00000002.tmp" in problems[0]


@pytest.mark.parametrize("edit, expected", [
    (lambda info: info.update(format=2), "has format 2"),
    (lambda info: info.update(step=9), "is for step 9"),
    (lambda info: info.pop("files"), "is unreadable"),
])
def test_a_marker_that_does_not_fit_is_skipped(tmp_path, edit, expected):
    manager = CheckpointManager(tmp_path)
    good = save(manager, 1)
    marker = save(manager, 2) / MARKER
    info = json.loads(marker.read_text())
    edit(info)
    marker.write_text(json.dumps(info))
    path, problems = manager.latest()
    assert path == good and expected in problems[0]
