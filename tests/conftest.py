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
