"""Appendix Figure 23: the PCA of hidden states at several checkpoints of one run."""

import json

import pytest

from mot.cli import main
from mot.config import ConfigError
from mot.eval.pca import first_batches, hidden_states_by_modality, modality_separation
from mot.eval.pca_over_training import analyze_pca_over_training, chosen_layers, nearest_steps, parse_fractions
from mot.runs.model import load_run_model
from mot.train.trainer import Trainer

from tests.helpers import small_recipe


def quiet(_):
    pass


def test_fractions_name_the_nearest_kept_checkpoints():
    assert parse_fractions("4%,24%,50%,100%") == [0.04, 0.24, 0.5, 1.0]
    assert nearest_steps([100, 200, 600, 1200, 2400], 2400, [0.04, 0.24, 0.5, 1.0]) == {
        0.04: 100, 0.24: 600, 0.5: 1200, 1.0: 2400}
    assert nearest_steps([2, 4], 6, [0.5]) == {0.5: 2}  # a tie goes to the earlier checkpoint
    with pytest.raises(ConfigError, match="no checkpoint"):
        nearest_steps([], 10, [1.0])


@pytest.mark.parametrize("text, message", [("4%,x", "'x' is not a percentage"), ("0%", "not in"),
                                           ("150%", "not in")])
def test_bad_fractions_are_named(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_fractions(text)


def test_the_layers_shown_are_spread_like_the_papers():
    assert chosen_layers(32) == [1, 11, 22, 32]
    assert chosen_layers(2) == [1, 2]
    assert chosen_layers(6) == [1, 3, 4, 6]


def test_every_checkpoint_is_projected_on_the_same_tokens(small_corpus, tmp_path):
    recipe = small_recipe(small_corpus, tmp_path, steps=6, checkpoint_every=2, eval_every=6, keep_last=5,
                          **{"data.grad_accum": 1})
    Trainer(recipe, log=quiet).train()
    run = tmp_path / "run"
    result = analyze_pca_over_training(run, tmp_path / "out", [0.3, 0.7, 1.0], batches=2, log=quiet)
    assert json.loads((tmp_path / "out" / "pca_over_training.json").read_text()) == result
    assert (tmp_path / "out" / "pca_over_training.png").read_bytes()[:4] == b"\x89PNG"
    assert [(c["fraction"], c["step"]) for c in result["checkpoints"]] == [(0.3, 2), (0.7, 4), (1.0, 6)]
    assert result["steps_total"] == 6
    # the numbers of step 4 are those of its model on the same batches (the analysis reads from the start)
    config, model = load_run_model(run, quiet, 4)
    states = hidden_states_by_modality(model, first_batches(config, "valid", 2))
    expected = modality_separation({layer: states[layer] for layer in (1, 2)})
    assert result["checkpoints"][1]["separation"] == {"layer 1": expected[1], "layer 2": expected[2]}


def test_mot_analyze_pca_over_training_from_the_command_line(small_corpus, tmp_path, capsys):
    Trainer(small_recipe(small_corpus, tmp_path, steps=4, checkpoint_every=2, eval_every=4,
                         **{"data.grad_accum": 1}), log=quiet).train()
    run = tmp_path / "run"
    assert main(["analyze", "pca", str(run), "--batches", "1", "--checkpoints", "50%,100%",
                 "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "pca_over_training.png").is_file()
    assert main(["analyze", "pca", str(run), "--checkpoints", "half"]) == 2
    assert "'half' is not a percentage" in capsys.readouterr().err
