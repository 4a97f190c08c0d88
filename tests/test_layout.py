"""The layout holds: the import contracts of ``pyproject.toml`` (import-linter) pass, and fail on
an upward import; no module is over 400 lines and no function of the model over 60."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "mot"
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def lint(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the ``mot`` package under ``root/src``, with ``root/pyproject.toml``'s contracts."""
    environment = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, env=environment, capture_output=True,
                          text=True, timeout=300)


def test_every_layer_imports_only_from_the_layers_below_it():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(SOURCE, tmp_path / "src" / "mot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    planted = tmp_path / "src" / "mot" / "model" / "planted.py"
    planted.write_text("def load(run):\n    from ..runs.model import load_run_model\n\n    return load_run_model(run)\n")
    done = lint(tmp_path)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and "mot.model.planted -> mot.runs.model" in done.stdout


def test_train_and_generate_are_independent(tmp_path):
    shutil.copytree(SOURCE, tmp_path / "src" / "mot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "src" / "mot" / "generate" / "planted.py").write_text("from ..train import optim\n")
    done = lint(tmp_path)
    assert done.returncode != 0 and "mot.generate.planted -> mot.train.optim" in done.stdout


def test_no_module_is_over_400_lines():
    long = {str(path.relative_to(ROOT)): count for path in SOURCE.rglob("*.py")
            if (count := len(path.read_text().splitlines())) > 400}
    assert long == {}


def test_no_function_of_the_model_is_over_60_lines():
    long = {}
    for path in (SOURCE / "model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long[f"{path.name}:{node.name}"] = length
    assert long == {}
