"""A run's model is loaded from its checkpoint without an optimizer (``generate`` and the analyses
build none), strictly: another architecture is refused."""

import pytest
import torch

from mot.io import CheckpointError
from mot.runs.checkpoints import CheckpointManager
from mot.runs.model import load_run_model
from mot.train.trainer import Trainer

from tests.helpers import small_recipe


def test_the_model_loads_without_building_an_optimizer(small_corpus, tmp_path, monkeypatch):
    trainer = Trainer(small_recipe(small_corpus, tmp_path, steps=3), log=lambda _: None)
    trainer.train()

    def no_optimizer(*args, **kwargs):
        raise AssertionError("an optimizer was built")

    monkeypatch.setattr("mot.train.optim.build_optimizer", no_optimizer)
    monkeypatch.setattr("torch.optim.AdamW", no_optimizer)
    config, model = load_run_model(tmp_path / "run", log=lambda _: None)
    assert config.steps == 3 and not model.training
    for (name, trained), loaded in zip(trainer.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(trained, loaded), name


def test_a_given_step_loads_that_checkpoint_and_keep_every_keeps_it(small_corpus, tmp_path):
    trainer = Trainer(small_recipe(small_corpus, tmp_path, steps=4, checkpoint_every=3, keep_last=1, keep_every=2),
                      log=lambda _: None)
    trainer.train()
    assert CheckpointManager(tmp_path / "run" / "checkpoints").steps() == [2, 4]  # 3 was saved, then pruned
    _, at_two = load_run_model(tmp_path / "run", log=lambda _: None, step=2)
    _, newest = load_run_model(tmp_path / "run", log=lambda _: None)
    for (name, trained), loaded in zip(trainer.model.state_dict().items(), newest.state_dict().values()):
        assert torch.equal(trained, loaded), name
    assert any(not torch.equal(a, b) for a, b in zip(at_two.state_dict().values(), newest.state_dict().values()))
    with pytest.raises(CheckpointError, match="no checkpoint of step 3"):
        load_run_model(tmp_path / "run", log=lambda _: None, step=3)


def test_a_checkpoint_of_another_architecture_is_refused(small_corpus, tmp_path):
    Trainer(small_recipe(small_corpus, tmp_path, steps=3), log=lambda _: None).train()
    config, model = load_run_model(tmp_path / "run", log=lambda _: None)
    from mot.model import build_model

    deeper = build_model(config.model.__class__(**{**config.model.to_dict(), "n_layers": 3}))
    checkpoints = CheckpointManager(tmp_path / "run" / "checkpoints")
    with pytest.raises(CheckpointError, match="does not fit this model: missing from the checkpoint: model.blocks.2"):
        checkpoints.load_model(checkpoints.latest()[0], deeper)
