"""Recipes: every paper recipe dry-runs on the meta device with each of its architectures; the tiny
recipes load; ``mot train`` and ``python -m mot.train`` on the command line."""

import subprocess
import sys
from pathlib import Path

import pytest

from mot.cli import main
from mot.config import ConfigError
from mot.model.accounting import count_parameters
from mot.model.transformer import build_model
from mot.presets import get_preset, preset_names
from mot.runs.recipe import load_recipe
from mot.runs.resolve import resolve_model
from mot.train.dry_run import dry_run

ROOT = Path(__file__).resolve().parents[2]
PAPER = sorted((ROOT / "configs" / "recipes" / "paper").glob("*.yaml"))
# Table 1, 3, 4, 5: (global tokens per step, steps) of each size
PAPER_TABLES = {"chameleon-37m": (12 * 32, 160_000), "chameleon-94m": (8 * 32, 160_000),
                "chameleon-443m": (6 * 64, 160_000), "chameleon-1.5b": (4 * 128, 120_000),
                "chameleon-7b": (2 * 384, 120_000), "chameleon-speech-443m": (6 * 64, 160_000),
                "chameleon-speech-880m": (4 * 128, 120_000), "chameleon-speech-1.5b": (4 * 128, 120_000),
                "chameleon-speech-7b": (2 * 384, 120_000), "transfusion-163m": (4 * 128, 250_000),
                "transfusion-760m": (4 * 128, 250_000), "transfusion-1.4b": (2 * 256, 250_000),
                "transfusion-7b": (2 * 256, 250_000), "ablation-880m": (4 * 128, 120_000)}


def test_there_is_a_recipe_for_every_row_of_the_papers_tables():
    assert sorted(p.stem for p in PAPER) == sorted(PAPER_TABLES)


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_every_paper_recipe_dry_runs_with_each_architecture(path, monkeypatch):
    built = []

    def spy(config, device=None):  # the dry run's model must live on the meta device: no memory
        model = build_model(config, device)
        built.append(all(p.is_meta for p in model.parameters()))
        return model

    monkeypatch.setattr("mot.train.dry_run.build_model", spy)
    sequences, steps = PAPER_TABLES[path.stem]
    for preset in (n for n in preset_names() if n.startswith(path.stem + "-")):
        config = resolve_model(load_recipe(path, [f"preset={preset}"]))
        report = dry_run(config)
        assert report.tokens_per_step == sequences * 4096 and config.steps == steps
        assert report.parameters_total == count_parameters(get_preset(preset)).total
        assert config.optim.total_steps == steps and config.optim.lr * config.optim.min_lr_ratio == pytest.approx(1.5e-5)
    assert built and all(built)


def test_the_cli_dry_run_prints_the_estimates(capsys):
    assert main(["train", "--config", str(ROOT / "configs/recipes/paper/chameleon-7b.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "377,487,360,000" in out and "13,489,430,528" in out  # Table 1's 0.377T tokens; MoT-7B's parameters


@pytest.mark.parametrize("name", ["chameleon", "chameleon-speech"])
@pytest.mark.parametrize("architecture", ["dense", "mot", "moe4x"])
def test_the_tiny_recipes_make_each_architecture(name, architecture):
    config = load_recipe(ROOT / f"configs/recipes/tiny/{name}.yaml", [f"architecture={architecture}"])
    modalities = ["text", "image"] + (["speech"] if name == "chameleon-speech" else [])
    model = resolve_model(config, 5000, modalities).model
    assert config.name == f"{name}-{architecture}" and model.modalities == modalities
    assert len(model.tower_names) == (len(modalities) if architecture == "mot" else 1)
    assert (model.moe.towers == ["shared"]) == (architecture == "moe4x")


def test_bad_recipes_are_named(tmp_path, capsys):
    with pytest.raises(ConfigError, match="architecture='sparse'"):
        resolve_model(load_recipe(None, ["architecture=sparse"]))
    with pytest.raises(ConfigError, match="data.seq_len=600: exceeds model.max_seq_len=512"):
        load_recipe(ROOT / "configs/recipes/tiny/chameleon.yaml", ["data.seq_len=600"])
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--config", str(ROOT / "configs/recipes/tiny/chameleon.yaml"),
                 f"data.corpus={tmp_path}", f"out_dir={tmp_path}"]) == 2
    assert "run `mot prepare" in capsys.readouterr().err
    assert not (tmp_path / "chameleon-mot").exists()


def test_python_dash_m_mot_train_is_mot_train():
    done = subprocess.run([sys.executable, "-m", "mot", "train", "--config",
                           str(ROOT / "configs/recipes/paper/transfusion-163m.yaml"), "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "transfusion-163m-mot" in done.stdout
