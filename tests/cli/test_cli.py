"""The ``mot`` command, run in-process."""

from __future__ import annotations

import pytest
import yaml

from mot.cli import main
from mot.config import ConfigError, ModelConfig, load_config, save_config
from mot.eval.sizes import preset_table
from mot.model.accounting import count_parameters, flops_per_token
from mot.presets import get_preset, preset_names, resolve_model_config


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_config_list_names_every_preset(capsys):
    code, out, _ = run(capsys, "config", "list")
    assert code == 0
    for name in preset_names():
        assert name in out
    assert "Table 5" in out and "chameleon-speech" in out


def test_config_show_prints_yaml_that_loads_back(capsys):
    code, out, err = run(capsys, "config", "show", "--config", "chameleon-7b-mot-text-moe4x", "n_layers=3")
    assert code == 0 and err == ""
    shown = ModelConfig(**yaml.safe_load(out))  # pure YAML on stdout; moe becomes an MoEConfig
    expected = get_preset("chameleon-7b-mot-text-moe4x")
    expected.n_layers = 3
    assert shown == expected


def test_config_show_dry_run(capsys):
    config = get_preset("chameleon-speech-443m-loo-text")
    counts, flops = count_parameters(config), flops_per_token(config, 1024)
    code, out, _ = run(capsys, "config", "show", "--config", "chameleon-speech-443m-loo-text", "--dry-run",
                       "--context", "1024")
    assert code == 0
    assert f"{counts.total:,}" in out and f"{counts.active:,}" in out
    assert f"{counts.non_embedding_per_group['image_speech']:,}" in out
    assert f"{flops.training:,.0f}" in out and f"{flops.forward:,.0f}" in out
    assert "equal to the analytic count" in out


def test_override_after_an_option_is_still_an_override(capsys):
    code, out, _ = run(capsys, "config", "show", "--config", "tiny-mot", "--dry-run", "n_layers=1")
    assert code == 0
    assert "n_layers: 1" in out
    assert f"{count_parameters(get_preset('tiny-mot')).total:,}" not in out  # counts are of the 1-layer model


def test_config_save_and_show_a_yaml_file(capsys, tmp_path):
    out_file = tmp_path / "deep" / "model.yaml"
    code, out, _ = run(capsys, "config", "save", "--config", "tiny-moe4x", "--out", str(out_file), "d_model=64")
    assert code == 0 and str(out_file) in out
    saved = load_config(ModelConfig, out_file)
    assert saved.d_model == 64 and saved.moe.towers == ["shared"]
    code, out, _ = run(capsys, "config", "show", "--config", str(out_file), "n_heads=2", "--dry-run")
    assert code == 0 and "n_heads: 2" in out and "d_model: 64" in out
    assert resolve_model_config(str(out_file), ["n_heads=2"]).n_heads == 2


def test_config_list_sizes_covers_every_paper_preset(capsys):
    code, out, _ = run(capsys, "config", "list", "--sizes")
    assert code == 0 and "S=4096" in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    paper = [name for name in preset_names() if not name.startswith("tiny-")]
    assert set(paper) <= set(lines) and "tiny-mot" not in lines
    row = lines["chameleon-7b-mot"]  # paper size, total, active, per tower, training GFLOP/token
    training = flops_per_token(get_preset("chameleon-7b-mot"), 4096).training
    for cell in ("7B", "13.5B", "7.01B", "text 6.48B · image 6.48B", f"{training / 1e9:,.2f}"):
        assert cell in row


def test_preset_table_at_another_context():
    header, rows = preset_table(context_length=2048)
    assert "S=2048" in header[-1] and len(rows[0]) == len(header)
    dense = next(row for row in rows if row[0] == "chameleon-37m-dense")
    assert dense[-1] == f"{flops_per_token(get_preset('chameleon-37m-dense'), 2048).training / 1e9:,.2f}"


@pytest.mark.parametrize("argv, message", [
    (["config", "show", "--config", "chameleon-7b-mott"], "did you mean chameleon-7b-mot"),
    (["config", "show", "--config", "missing.yaml"], "does not exist"),
    (["config", "show", "--config", "tiny-mot", "d_model=7"], "d_model=7"),
    (["config", "show", "--config", "tiny-mot", "no_such_key=1"], "no_such_key"),
    (["config", "show", "--config", "tiny-mot", "n_layers"], "key=value"),
    (["config", "show", "--config", "tiny-mot", "--dry-run", "--context", "4096"], "max_seq_len=512"),
    (["config", "list", "--context", "4096"], "--context: give it with --sizes"),
    (["config", "save", "--config", "nope", "--out", "x.yaml"], "unknown preset"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("mot: error:") and "Traceback" not in err


def test_bad_yaml_file_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("d_model: [1, 2\n")
    code, _, err = run(capsys, "config", "show", "--config", str(bad))
    assert code == 2 and "not valid YAML" in err.splitlines()[0]


def test_unwritable_output_exits_2(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, "config", "save", "--config", "tiny-mot", "--out", str(blocker / "out.yaml"))
    assert code == 2 and err.startswith("mot: error:")


@pytest.mark.parametrize("argv", [[], ["config"], ["config", "show", "--config", "tiny-mot", "--bogus"],
                                  ["config", "list", "--sizes", "--context", "0"], ["config", "show", "tiny-mot"],
                                  ["summary"], ["plot", "run", "--out", "x.png"]])
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: mot" in capsys.readouterr().err


def test_resolve_config_rejects_unknown_names():
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_model_config("tiny-mo")


def test_saved_preset_round_trips(tmp_path):
    path = tmp_path / "c.yaml"
    save_config(get_preset("ablation-880m-ffn"), path)
    assert resolve_model_config(str(path)) == get_preset("ablation-880m-ffn")


def test_every_verb_follows_one_convention():
    """Inputs: --config or a positional RUN; outputs: --out; the help of every verb says so."""
    from mot.cli.app import build_parser

    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert set(verbs) == {"config", "prepare", "train", "compare", "generate", "eval", "export", "analyze", "serve", "bench"}
    leaves = {}
    for name, verb in verbs.items():
        nested = [a for a in verb._actions if a.__class__.__name__ == "_SubParsersAction"]
        leaves.update({f"{name} {sub}": p for sub, p in nested[0].choices.items()} if nested else {name: verb})
    for name, leaf in leaves.items():
        options = {option for action in leaf._actions for option in action.option_strings}
        positionals = [action.metavar for action in leaf._actions if not action.option_strings]
        assert "--config" in options or "RUN" in positionals or name == "config list", name
        writes = name not in ("config list", "config show", "serve")  # a server writes no files
        assert ("--out" in options) == writes, name
        assert "--steps" not in options and "--preset" not in options, name  # unambiguous names only


def test_python_dash_m_mot_is_mot():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mot", "config", "list"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "chameleon-7b-mot" in done.stdout
