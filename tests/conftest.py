"""Every test starts from the same random state; the small prepared corpus is made once."""

import random

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    random.seed(1234)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """A corpus prepared once for every test that trains (see ``tests.helpers.SMALL_CORPUS``)."""
    from tests.helpers import prepare_small_corpus

    return prepare_small_corpus(tmp_path_factory.mktemp("small_corpus"))


@pytest.fixture(scope="session")
def transfusion_run(small_corpus, tmp_path_factory):
    """A Transfusion-setting run of 2 steps on the small corpus (its directory), for pipelines and analyses."""
    from mot.train.trainer import Trainer
    from tests.helpers import small_transfusion_recipe

    runs = tmp_path_factory.mktemp("transfusion_runs")
    Trainer(small_transfusion_recipe(small_corpus, runs, steps=2, checkpoint_every=2), log=lambda _: None).train()
    return runs / "transfusion"


@pytest.fixture(scope="session")
def chameleon_run(small_corpus, tmp_path_factory):
    """A Chameleon-setting (text + VQ image codes) run of 2 steps on the small corpus (its directory)."""
    from mot.train.trainer import Trainer
    from tests.helpers import small_recipe

    runs = tmp_path_factory.mktemp("chameleon_runs")
    Trainer(small_recipe(small_corpus, runs, steps=2, checkpoint_every=2, name="chameleon"), log=lambda _: None).train()
    return runs / "chameleon"
