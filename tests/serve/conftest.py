"""A served model of the session's small Chameleon run, and servers of it on free loopback ports."""

import pytest

from mot.serve.served_model import ServedModel


@pytest.fixture(scope="session")
def served(chameleon_run):
    """The small Chameleon run (2 steps) as the server sees it."""
    return ServedModel.from_run(chameleon_run, log=lambda _: None)
