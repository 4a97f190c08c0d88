"""A recipe is resolved against its corpus once, before anything runs: what the corpus cannot serve
is refused before step 1, by the trainer, the dry run and ``mot compare`` alike."""

import pytest

from mot.cli import main
from mot.config import ConfigError
from mot.data.settings import CorpusError
from mot.experiments.compare import run_compare
from mot.experiments.experiment import ExperimentConfig
from mot.runs.resolve import resolve_recipe
from mot.train.trainer import Trainer

from tests.helpers import experiment_recipe, small_recipe


def test_the_model_takes_the_corpus_vocabulary_and_the_architecture(small_corpus, tmp_path):
    config, corpus = resolve_recipe(small_recipe(small_corpus, tmp_path, architecture="dense"))
    layout = corpus.layout("chameleon")
    assert config.model.vocab_size == layout.vocab_size and config.model.modalities == layout.modalities
    assert set(config.model.towers.values()) == {"shared"}
    assert resolve_recipe(config)[0] == config  # resolving again changes nothing


def test_a_validation_split_the_corpus_lacks_is_refused_before_step_1(small_corpus, tmp_path):
    recipe = small_recipe(small_corpus, tmp_path, **{"data.valid_splits": "[valid,test]"})
    with pytest.raises(CorpusError, match=r"data.valid_splits: .* has no 'test' shards for the chameleon setting"):
        Trainer(recipe, log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_a_setting_the_corpus_was_not_prepared_for_is_refused(small_corpus, tmp_path):
    with pytest.raises(CorpusError, match="has no speech"):
        resolve_recipe(small_recipe(small_corpus, tmp_path, **{"data.setting": "chameleon_speech"}))


def test_tokenizers_other_than_the_recipes_are_refused(small_corpus, tmp_path):
    with pytest.raises(ConfigError, match="data.tokenizers.text='0123', but .* the recipe was made for another corpus"):
        resolve_recipe(small_recipe(small_corpus, tmp_path, **{"data.tokenizers": "{text: '0123'}"}))


def test_the_dry_run_checks_the_corpus_when_it_is_there(small_corpus, tmp_path, capsys):
    recipe = experiment_recipe(small_corpus, tmp_path)
    assert main(["train", "--config", str(recipe), "--dry-run"]) == 0
    assert main(["train", "--config", str(recipe), "--dry-run", "data.valid_splits=[valid,test]"]) == 2
    assert "data.valid_splits:" in capsys.readouterr().err
    missing = ["--dry-run", f"data.corpus={tmp_path / 'nowhere'}"]
    assert main(["train", "--config", str(recipe), *missing]) == 0
    assert "is not prepared: using the recipe's vocabulary" in capsys.readouterr().out


def test_a_comparison_checks_every_architecture_before_training_any(small_corpus, tmp_path):
    recipe = experiment_recipe(small_corpus, tmp_path)
    experiment = ExperimentConfig(name="x", recipe=str(recipe), out_dir=str(tmp_path / "out"),
                                  overrides=["data.valid_splits=[valid,test]"],
                                  architectures={"dense": ["architecture=dense"], "mot": ["architecture=mot"]})
    with pytest.raises(CorpusError, match="data.valid_splits"):
        run_compare(experiment, log=lambda _: None)
    assert not (tmp_path / "out" / "x" / "runs").exists()
