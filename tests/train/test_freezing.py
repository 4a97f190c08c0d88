"""Frozen towers and per-tower learning rates: a frozen text tower (LMFusion) keeps its weights and
its text-only loss bit for bit while the image tower learns; the optimizer groups by tower."""

import dataclasses
import json

import pytest
import torch

from mot.config import ConfigError, ModelConfig
from mot.data.settings import open_corpus
from mot.model.transformer import build_model
from mot.runs.model import load_run_model
from mot.runs.optim_config import OptimConfig
from mot.runs.resolve import resolve_recipe
from mot.train.objective import make_objective
from mot.train.optim import parameter_groups
from mot.train.trainer import Trainer
from mot.train.validation import loss_sums, per_modality, validation_batches

from tests.helpers import prepare_corpus_with_words, small_recipe

UNTIED_HEAD = "[ffn,attention,norms,head]"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The small corpus plus text-only documents (``words``), for a text-only validation loss."""
    out = tmp_path_factory.mktemp("corpus")
    return prepare_corpus_with_words(out, 60)


def frozen_recipe(corpus, runs, **overrides):
    settings = {"model.untied": UNTIED_HEAD, "freeze": "[text]", "steps": 4, "checkpoint_every": 4,
                "data.valid_splits": "[valid]"}
    return small_recipe(corpus, runs, **{**settings, **overrides})


def initial_model(config):
    """The weights the trainer starts from (it seeds with ``config.seed`` and builds the model)."""
    resolved, _ = resolve_recipe(config)
    torch.manual_seed(resolved.seed)
    return build_model(resolved.model)


def text_only_loss(model, config, corpus):
    """The text loss on the ``valid`` documents made of text alone."""
    resolved, _ = resolve_recipe(config)
    text_only = dataclasses.replace(resolved, data=dataclasses.replace(resolved.data, weights={"shapescenes": 0}))
    source = open_corpus(corpus)
    batches = validation_batches(source, text_only, "valid")
    objective = make_objective(text_only, text_only.model.modalities, 0)
    with torch.no_grad():
        sums, counts = loss_sums(objective, lambda inputs: model.eval()(**inputs), batches, 2, torch.device("cpu"))
    return per_modality(text_only.model.modalities, sums, counts)


def test_a_frozen_text_tower_keeps_its_weights_and_its_text_loss(corpus, tmp_path):
    config = frozen_recipe(corpus, tmp_path)
    before = initial_model(config)
    Trainer(config, log=lambda _: None).train()
    _, after = load_run_model(tmp_path / "run", log=lambda _: None)
    old, new = before.state_dict(), after.state_dict()
    text = [name for name in old if ".towers.text." in name]
    image = [name for name in old if ".towers.image." in name]
    assert text and image
    assert all(torch.equal(old[name], new[name]) for name in text)
    assert all(not torch.equal(old[name], new[name]) for name in image)
    layout = open_corpus(corpus).layout("chameleon")
    text_rows = torch.from_numpy(layout.modality_table() == 0)
    assert torch.equal(old["embed.weight"][text_rows], new["embed.weight"][text_rows])
    assert not torch.equal(old["embed.weight"][~text_rows], new["embed.weight"][~text_rows])
    loss_before, loss_after = text_only_loss(before, config, corpus), text_only_loss(after, config, corpus)
    assert loss_before["text"] is not None and loss_before["image"] is None
    assert loss_before == loss_after


def test_without_freezing_the_text_tower_moves(corpus, tmp_path):
    config = frozen_recipe(corpus, tmp_path, freeze="[]")
    before = initial_model(config)
    Trainer(config, log=lambda _: None).train()
    _, after = load_run_model(tmp_path / "run", log=lambda _: None)
    assert not torch.equal(before.state_dict()["blocks.0.ffn.towers.text.up.weight"],
                           after.state_dict()["blocks.0.ffn.towers.text.up.weight"])
    assert text_only_loss(before, config, corpus) != text_only_loss(after, config, corpus)


def test_a_frozen_run_resumes_bit_for_bit(corpus, tmp_path):
    straight = frozen_recipe(corpus, tmp_path / "a", steps=6, checkpoint_every=3)
    Trainer(straight, log=lambda _: None).train()
    Trainer(frozen_recipe(corpus, tmp_path / "b", steps=3, checkpoint_every=3), log=lambda _: None).train()
    Trainer(frozen_recipe(corpus, tmp_path / "b", steps=6, checkpoint_every=3), log=lambda _: None).train()
    read = lambda path: [line for line in (path / "run" / "metrics.jsonl").read_text().splitlines()
                         if '"kind": "train"' in line and '"step": 6' in line]
    losses = [json.loads(line)["loss"] for line in read(tmp_path / "a") + read(tmp_path / "b")]
    assert len(losses) == 2 and losses[0] == losses[1]


def test_tower_learning_rates_make_their_own_groups():
    model = build_model(ModelConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, max_seq_len=16))
    groups = {g["name"]: g for g in parameter_groups(model, OptimConfig(tower_lr={"image": 0.5}))}
    assert set(groups) == {"decay", "decay.image", "no_decay", "no_decay.image"}
    assert groups["decay.image"]["lr_scale"] == 0.5 and groups["decay"]["lr_scale"] == 1.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(".towers.image." in names[id(p)] for p in groups["decay.image"]["params"])
    assert not any(".towers.image." in names[id(p)] for p in groups["decay"]["params"])


def test_the_learning_rate_of_a_tower_is_scaled(corpus, tmp_path):
    trainer = Trainer(frozen_recipe(corpus, tmp_path, freeze="[]", **{"optim.tower_lr": "{image: 0.25}"}),
                      log=lambda _: None)
    trainer.train_step()
    rates = {group["name"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert rates["decay.image"] == pytest.approx(0.25 * rates["decay"])


@pytest.mark.parametrize("overrides, message", [
    ({"freeze": "[vision]"}, "freeze names ['vision'], which are not towers"),
    ({"freeze": "[text,image]"}, "freezes every tower"),
    ({"model.untied": "[ffn]"}, "shares ['attention', 'norms'] between towers"),
    ({"optim.decay_embeddings": True}, "decay_embeddings"),
    ({"freeze": "[]", "optim.tower_lr": "{speech: 2.0}"}, "optim.tower_lr names ['speech']"),
])
def test_freezing_what_cannot_be_frozen_is_refused_before_anything_is_written(corpus, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Trainer(frozen_recipe(corpus, tmp_path, **overrides), log=lambda _: None)
    assert not (tmp_path / "run").exists()
