"""Damaged runs lose nothing: ``mot train`` moves damaged checkpoints aside (never overwrites or
prunes them) and stops, writing nothing, when no good one is left; readers of a run move nothing."""

import re

import pytest
import torch

from mot.io import CheckpointError
from mot.runs.checkpoints import CheckpointManager
from mot.runs.model import load_run_model
from mot.train.trainer import Trainer

from tests.helpers import small_recipe


def quiet(_):
    pass


def damage(checkpoint):
    """Flip one byte in the middle of the checkpoint's first DCP file; returns that file's new bytes."""
    victim = sorted(p for p in checkpoint.iterdir() if p.suffix == ".distcp")[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    return victim.name, bytes(data)


def snapshot(run):
    """Every file of a run directory outside its checkpoints, with its bytes."""
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and "checkpoints" not in p.parts}


def test_a_run_whose_every_checkpoint_is_damaged_stops_and_loses_nothing(small_corpus, tmp_path):
    Trainer(small_recipe(small_corpus, tmp_path, steps=6), log=quiet).train()
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    damaged = {name: damage(checkpoints / name) for name in ("step-00000003", "step-00000006")}
    before = snapshot(run)

    messages = []
    with pytest.raises(CheckpointError, match=re.escape(f"{checkpoints} holds no good checkpoint to resume from: "
                                                        f"the damaged ones are kept, moved aside to "
                                                        f"{checkpoints}/damaged/step-00000003, "
                                                        f"{checkpoints}/damaged/step-00000006")
                       + r".*delete or rename .* or train with another name="):
        Trainer(small_recipe(small_corpus, tmp_path, steps=10), log=messages.append)

    for name in damaged:  # each move is logged with the old path, the new one and the reason
        assert any(m.startswith(f"checkpoint passed over: {checkpoints / name}: ") and "SHA-256" in m
                   and m.endswith(f"moved aside to {checkpoints / 'damaged' / name}") for m in messages), name
    assert sorted(p.name for p in checkpoints.iterdir()) == ["damaged"]
    for name, (victim, data) in damaged.items():
        assert (checkpoints / "damaged" / name / victim).read_bytes() == data
    assert snapshot(run) == before  # metrics.jsonl, config.yaml, environment.json, events: untouched

    # starting again does not quietly train from step 0 either
    with pytest.raises(CheckpointError, match="holds no good checkpoint to resume from"):
        Trainer(small_recipe(small_corpus, tmp_path, steps=10), log=quiet)
    assert sorted(p.name for p in (checkpoints / "damaged").iterdir()) == sorted(damaged)
    assert snapshot(run) == before


def test_a_damaged_newest_checkpoint_is_kept_aside_and_the_run_resumes_from_the_older_one(small_corpus, tmp_path):
    Trainer(small_recipe(small_corpus, tmp_path, steps=6), log=quiet).train()
    checkpoints = tmp_path / "run" / "checkpoints"
    victim, data = damage(checkpoints / "step-00000006")

    messages = []
    resumed = Trainer(small_recipe(small_corpus, tmp_path, steps=6), log=messages.append)
    assert resumed.step == 3
    assert any(f"{checkpoints / 'step-00000006'}: " in m and f"moved aside to {checkpoints / 'damaged'}" in m
               for m in messages)
    resumed.train()  # saves step 6 anew beside the damaged copy, which stays
    assert sorted(p.name for p in checkpoints.iterdir()) == ["damaged", "step-00000003", "step-00000006"]
    assert (checkpoints / "damaged" / "step-00000006" / victim).read_bytes() == data

    damage(checkpoints / "step-00000006")  # damaged again: the name is taken, so it gets another
    assert Trainer(small_recipe(small_corpus, tmp_path, steps=6), log=quiet).step == 3
    assert sorted(p.name for p in (checkpoints / "damaged").iterdir()) == ["step-00000006", "step-00000006-2"]


def test_readers_of_a_run_move_nothing(small_corpus, tmp_path):
    Trainer(small_recipe(small_corpus, tmp_path, steps=6), log=quiet).train()
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    damage(checkpoints / "step-00000006")
    messages = []
    load_run_model(run, log=messages.append)
    assert any("step-00000006" in m and m.endswith("skipped") for m in messages)
    assert messages[-1] == f"loaded {checkpoints / 'step-00000003'}"

    damage(checkpoints / "step-00000003")
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        load_run_model(run, log=quiet)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000003", "step-00000006"]


def test_an_unfinished_save_is_not_damage(small_corpus, tmp_path):
    unfinished = tmp_path / "run" / "checkpoints" / "step-00000003.tmp"
    unfinished.mkdir(parents=True)
    (unfinished / "__0_0.distcp").write_bytes(b"half")
    trainer = Trainer(small_recipe(small_corpus, tmp_path, steps=3), log=quiet)
    assert trainer.step == 0
    trainer.train()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000003"]


def test_pruning_never_deletes_checkpoints_set_aside(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2):
        manager.save(step, {"weights": torch.full((4,), float(step))})
    damage(tmp_path / "step-00000002")
    path, _ = manager.latest(set_aside_damaged=True)
    assert path == tmp_path / "step-00000001"
    for step in (2, 3, 4, 5):
        manager.save(step, {"weights": torch.full((4,), float(step))})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged", "step-00000004", "step-00000005"]
    assert manager.damaged() == [tmp_path / "damaged" / "step-00000002"]
