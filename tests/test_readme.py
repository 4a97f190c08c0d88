"""The README's two commands: present, what CI runs, and the main one works."""

import re
import shlex
import subprocess
from pathlib import Path

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


def test_the_main_command_runs(capsys):
    mot_part = readme_command("main command").split("&&")[1].strip()
    argv = shlex.split(mot_part)
    assert argv[0] == "mot"
    assert main(argv[1:]) == 0
    assert "chameleon-7b-mot" in capsys.readouterr().out
