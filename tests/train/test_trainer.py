"""The trainer on a small prepared corpus: exact resume, checkpoints, the guard, spikes, export."""

import json
import re
import shutil

import pytest
import torch

from mot.config import ConfigError
from mot.io import CheckpointError
from mot.model.transformer import MoTModel
from mot.runs.metrics import read_metrics
from mot.runs.model import export_run
from mot.runs.recipe import load_recipe
from mot.train.trainer import Trainer, TrainingError

from tests.helpers import small_recipe

@pytest.fixture
def corpus(small_corpus):
    return small_corpus


def recipe(corpus, runs, **overrides):
    return small_recipe(corpus, runs, **overrides)


def train_losses(run_dir):
    return [(r["step"], r["loss"], r["loss_per_modality"]) for r in read_metrics(run_dir) if r["kind"] == "train"]


def quiet(_):
    pass


def test_a_resumed_run_continues_bit_for_bit(corpus, tmp_path):
    straight = Trainer(recipe(corpus, tmp_path / "a"), log=quiet)
    straight.train()
    assert min(straight.loader.epochs().values()) >= 1  # the run crossed a loader epoch boundary

    first = Trainer(recipe(corpus, tmp_path / "b", steps=5), log=quiet)  # stops after the step-3 checkpoint's
    first.train()
    # as if the process had died after step 5: its checkpoint of step 5 is lost, step 3 is the newest
    shutil.rmtree(tmp_path / "b" / "run" / "checkpoints" / "step-00000005")
    resumed = Trainer(recipe(corpus, tmp_path / "b"), log=quiet)
    assert resumed.step == 3
    resumed.train()

    assert train_losses(tmp_path / "a" / "run") == train_losses(tmp_path / "b" / "run")  # bitwise: floats equal
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    losses = train_losses(tmp_path / "a" / "run")
    assert [step for step, _, _ in losses] == list(range(1, 11))
    assert losses[-1][1] < losses[0][1]
    valid = [r for r in read_metrics(tmp_path / "a" / "run") if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [4, 8, 10] and set(valid[0]["loss"]) == {"valid", "heldout"}


def test_the_run_directory_holds_config_environment_metrics_and_events(corpus, tmp_path):
    Trainer(recipe(corpus, tmp_path, steps=3), log=quiet).train()
    run = tmp_path / "run"
    assert load_recipe(run / "config.yaml").model.vocab_size == 300 + 1000 + 5  # taken from the corpus
    environment = json.loads((run / "environment.json").read_text())
    assert environment["torch"] == torch.__version__ and environment["world_size"] == 1
    record = read_metrics(run)[0]
    assert set(record["loss_per_modality"]) == {"text", "image"} and record["tokens_per_second"]["image"] > 0
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003"]


def test_a_partial_or_corrupt_checkpoint_is_never_loaded(corpus, tmp_path):
    Trainer(recipe(corpus, tmp_path, steps=6), log=quiet).train()
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "step-00000007.tmp").mkdir()  # a save that was interrupted mid-write
    (checkpoints / "step-00000007.tmp" / "__0_0.distcp").write_bytes(b"half")
    newest = checkpoints / "step-00000006"
    victim = next(p for p in newest.iterdir() if p.suffix == ".distcp")
    victim.write_bytes(victim.read_bytes()[:-7])  # truncated after it was committed
    messages = []
    resumed = Trainer(recipe(corpus, tmp_path, steps=6), log=messages.append)
    assert resumed.step == 3
    assert any("step-00000007.tmp: unfinished save" in m for m in messages)
    assert any("step-00000006" in m and "skipped" in m for m in messages)


def test_a_non_finite_loss_stops_the_step_and_names_the_modality(corpus, tmp_path):
    trainer = Trainer(recipe(corpus, tmp_path, steps=6), log=quiet)
    for _ in range(3):
        trainer.train_step()
    trainer.save()
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    with torch.no_grad():
        trainer.model.final_norm.towers["image"].weight.fill_(float("nan"))  # poisons image predictions only
    with pytest.raises(TrainingError, match=r"step 3: the image loss is not finite; no update was made"):
        trainer.train_step()
    for name, parameter in trainer.model.named_parameters():
        if "final_norm.towers.image" not in name:
            assert torch.equal(parameter, before[name]), name
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000003"]


def test_spikes_are_skipped_and_logged(corpus, tmp_path):
    config = recipe(corpus, tmp_path, **{"spike_skip.enabled": True, "spike_skip.window": 2,
                                         "spike_skip.factor": 1.0001, "optim.lr": 0.5})
    Trainer(config, log=quiet).train()
    skipped = sum(r["skipped_steps"] for r in read_metrics(tmp_path / "run") if r["kind"] == "train")
    assert skipped > 0


def test_export_writes_the_release_form(corpus, tmp_path):
    trainer = Trainer(recipe(corpus, tmp_path, steps=3), log=quiet)
    trainer.train()
    export_run(tmp_path / "run", tmp_path / "release", log=quiet)
    released = MoTModel.from_pretrained(tmp_path / "release")
    for (name, a), b in zip(trainer.model.state_dict().items(), released.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="already holds a model"):
        export_run(tmp_path / "run", tmp_path / "release", log=quiet)
    with pytest.raises(ConfigError, match="not a run directory"):
        export_run(tmp_path, tmp_path / "elsewhere", log=quiet)


def test_bad_recipes_fail_before_anything_is_written(corpus, tmp_path):
    with pytest.raises(ConfigError, match="Key 'learning_rate' not in 'OptimConfig'"):
        recipe(corpus, tmp_path, **{"optim.learning_rate": 1})
    with pytest.raises(ConfigError, match=r"data.tokenizers.text='0123456789abcdef', but .* was tokenized with text"):
        Trainer(recipe(corpus, tmp_path, **{"data.tokenizers": "{text: '0123456789abcdef'}"}), log=quiet)
    assert not (tmp_path / "run").exists()

    Trainer(recipe(corpus, tmp_path, steps=3), log=quiet).train()
    saved = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"holds a run with another config \(differs in \['model.d_model'\]\)"):
        Trainer(recipe(corpus, tmp_path, **{"model.d_model": 64}), log=quiet)
    assert (tmp_path / "run" / "config.yaml").read_text() == saved
    # a checkpoint of another architecture, found without the config's protection
    (tmp_path / "run" / "config.yaml").unlink()
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000003"
    files = sorted(p.name for p in checkpoint.iterdir())
    with pytest.raises(CheckpointError, match="does not fit this run's model"):
        Trainer(recipe(corpus, tmp_path, **{"model.d_model": 64}), log=quiet)
    assert sorted(p.name for p in checkpoint.iterdir()) == files
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_activation_checkpointing_and_compile_train_the_same_model(corpus, tmp_path):
    import torch._dynamo

    plain = Trainer(recipe(corpus, tmp_path, name="plain", steps=3), log=quiet)
    plain.train()
    recomputed = Trainer(recipe(corpus, tmp_path, name="recomputed", steps=3, activation_checkpointing=True), log=quiet)
    recomputed.train()
    assert train_losses(tmp_path / "recomputed") == train_losses(tmp_path / "plain")
    # the checkpoint keys are the plain model's, so a run may switch recomputation on or off
    assert [n for n, _ in recomputed.model.named_parameters()] != [n for n, _ in plain.model.named_parameters()]
    Trainer(recipe(corpus, tmp_path, name="recomputed", steps=4), log=quiet).train()

    torch._dynamo.reset()
    compiled = Trainer(recipe(corpus, tmp_path, name="compiled", steps=3, compile=True, deterministic=False),
                       log=quiet)
    compiled.train()
    torch._dynamo.reset()
    for (_, a, _), (_, b, _) in zip(train_losses(tmp_path / "compiled"), train_losses(tmp_path / "plain")):
        assert abs(a - b) < 1e-4


def test_the_cli_exports_and_analyzes_a_run(corpus, tmp_path, capsys):
    from mot.cli import main

    Trainer(recipe(corpus, tmp_path, steps=3), log=quiet).train()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "release")]) == 0
    assert (tmp_path / "release" / "model.safetensors").is_file()
    assert main(["analyze", "pca", str(tmp_path / "run"), "--batches", "1"]) == 0
    assert (tmp_path / "run" / "analysis" / "pca.png").is_file()
    assert main(["analyze", "losses", str(tmp_path / "run"), "--out", str(tmp_path / "loss.png")]) == 0
    assert (tmp_path / "loss.png").is_file() and "wrote" in capsys.readouterr().out


def test_training_off_a_terminal_prints_lines_with_the_time_left(corpus, tmp_path, capsys):
    Trainer(recipe(corpus, tmp_path, steps=4, log_every=2), log=quiet).train()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert re.search(r"^step +2 loss [0-9.]+ .* tok/s \(2/4 steps, ~\d+:\d\d left\)$", lines[0]), lines
    assert re.search(r"\(4/4 steps, ~0:00 left\)$", lines[-1]), lines


def test_a_corpus_that_gained_a_tokenizer_resumes_and_one_that_changed_one_does_not(small_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus, corpus)
    Trainer(small_recipe(corpus, tmp_path / "runs", steps=3), log=lambda _: None).train()
    manifest_path = corpus / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tokenizers"]["added_later"] = {"fingerprint": "f" * 64}  # as a rerun of mot prepare adds one
    manifest_path.write_text(json.dumps(manifest))
    trainer = Trainer(small_recipe(corpus, tmp_path / "runs", steps=4), log=lambda _: None)
    assert trainer.step == 3
    manifest["tokenizers"]["text"]["fingerprint"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TrainingError, match="trained on a corpus with tokenizers"):
        Trainer(small_recipe(corpus, tmp_path / "runs", steps=4), log=lambda _: None)
