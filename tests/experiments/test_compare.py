"""`mot compare`: FLOPs control, training side by side, resuming without retraining, the report."""

import json

import pytest

from mot.cli import main
from mot.config import ConfigError
from mot.experiments.compare import check_flops, run_compare
from mot.experiments.experiment import ExperimentConfig, architecture_recipes
from mot.runs.resolve import resolve_model

from tests.helpers import experiment_recipe


@pytest.fixture
def corpus(small_corpus):
    return small_corpus


def experiment(corpus, out, **fields):
    recipe = experiment_recipe(corpus, out)
    settings = dict(name="tiny", recipe=str(recipe), out_dir=str(out),
                    architectures={"dense": ["architecture=dense"], "mot": ["architecture=mot"],
                                   "moe4x": ["architecture=moe4x"]})
    settings.update(fields)
    return ExperimentConfig(**settings)


def test_a_comparison_trains_each_architecture_and_reports(corpus, tmp_path):
    config = experiment(corpus, tmp_path)
    report = run_compare(config, log=lambda _: None)
    results = json.loads((report / "results.json").read_text())
    assert set(results["architectures"]) == {"dense", "mot", "moe4x"}
    mot = results["architectures"]["mot"]
    assert mot["flops_ratio"] == 1.0 and mot["parameters_total"] > results["architectures"]["dense"]["parameters_total"]
    assert [step for step, _ in mot["train"]["image"]] == [1, 2, 3, 4]
    assert set(results["step_matching"]) == {"mot", "moe4x"}
    assert "train/image" in results["step_matching"]["mot"] and "valid/text" in results["step_matching"]["mot"]
    text = (report / "report.md").read_text()
    assert "## Step matching" in text and "| mot |" in text
    assert "## Wall-clock matching" in text
    assert [step for step, _ in mot["clock"]] == [1, 2, 3, 4] and mot["clock"][-1][1] == mot["training_seconds"]
    assert "seconds_fraction" in results["step_matching"]["mot"]["train/image"]
    for name in ("loss_train.png", "loss_valid.png", "step_matching.png"):
        assert (report / name).stat().st_size > 1000


def test_finished_architectures_are_not_retrained_and_interrupted_ones_resume(corpus, tmp_path, monkeypatch):
    config = experiment(corpus, tmp_path)
    run_compare(config, log=lambda _: None)
    runs = config.directory / "runs"
    # as if the comparison had been stopped during mot's run, after its step-2 checkpoint
    (runs / "mot" / "checkpoints" / "step-00000004").rename(runs / "mot" / "checkpoints" / "step-00000004.tmp")
    trained = []
    import mot.train.trainer as trainer_module

    original = trainer_module.Trainer.train

    def spy(self):
        trained.append((self.config.name, self.step))
        return original(self)

    monkeypatch.setattr(trainer_module.Trainer, "train", spy)
    messages = []
    run_compare(config, log=messages.append)
    assert trained == [("mot", 2)]  # resumed at step 2; dense and moe4x untouched
    assert sum("finished, not retrained" in m for m in messages) == 2


def test_flops_control_catches_a_mismatched_architecture(corpus, tmp_path):
    config = experiment(corpus, tmp_path, architectures={"dense": ["architecture=dense"],
                                                         "wide": ["architecture=mot", "model.ffn_hidden=512"]})
    recipes = {label: resolve_model(r, 1305, ["text", "image"]) for label, r in architecture_recipes(config).items()}
    with pytest.raises(ConfigError, match="architecture 'wide' costs .* would not be FLOPs-controlled"):
        check_flops(recipes, "dense")
    rows = check_flops({k: v for k, v in recipes.items() if k == "dense"}, "dense")
    assert rows["dense"]["flops_ratio"] == 1.0


def test_architectures_may_not_change_the_shared_conditions(corpus, tmp_path):
    config = experiment(corpus, tmp_path, architectures={"dense": ["architecture=dense"],
                                                         "mot": ["architecture=mot", "seed=3"]})
    with pytest.raises(ConfigError, match="architectures.mot changes seed"):
        architecture_recipes(config)
    with pytest.raises(ConfigError, match="reference='dense': not one of"):
        experiment(corpus, tmp_path, architectures={"mot": ["architecture=mot"]})


def test_the_cli_runs_an_experiment_and_its_variants(corpus, tmp_path, capsys):
    config = experiment(corpus, tmp_path / "written", variants={"short": ["steps=2"]})
    path = tmp_path / "experiment.yaml"
    import yaml

    path.write_text(yaml.safe_dump({k: getattr(config, k) for k in ("name", "recipe", "out_dir", "architectures",
                                                                     "variants")}))
    out = tmp_path / "elsewhere"  # --out is the experiment's out_dir
    assert main(["compare", "--config", str(path), "--out", str(out), "--variant", "short"]) == 0
    assert "report:" in capsys.readouterr().out
    results = json.loads((out / "tiny" / "report" / "results.json").read_text())
    assert results["variant"] == "short" and results["architectures"]["mot"]["steps"] == 2
    assert not (tmp_path / "written" / "tiny").exists()  # where the experiment file says
    assert main(["compare", "--config", str(path), "--variant", "huge"]) == 2
    assert "the experiment has variants ['short']" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["chameleon", "chameleon-speech", "leave-one-out", "ablation", "hybrid"])
def test_the_shipped_experiments_are_flops_controlled(name):
    from dataclasses import replace
    from pathlib import Path

    from mot.experiments.experiment import load_experiment

    root = Path(__file__).resolve().parents[2]
    config = load_experiment(root / f"configs/experiments/{name}.yaml")
    config = replace(config, recipe=str(root / config.recipe))  # the recipe path is relative to the repository
    modalities = ["text", "image"] + (["speech"] if "speech" in config.recipe else [])
    recipes = {label: resolve_model(r, 5603, modalities) for label, r in architecture_recipes(config).items()}
    rows = check_flops(recipes, config.reference)
    assert all(abs(row["flops_ratio"] - 1) < 1e-3 for row in rows.values())
    assert architecture_recipes(config, "gpu")["dense"].steps == 5000
