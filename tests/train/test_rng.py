"""Capturing and restoring the global random number generators."""

import random

import numpy as np
import pytest
import torch

from mot.train.rng import capture_rng_state, restore_rng_state


def draw():
    values = [random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.standard_normal(),
              torch.rand(3).tolist(), torch.randn(2).tolist()]
    if torch.cuda.is_available():
        values.append(torch.rand(3, device="cuda").tolist())
    return values


def test_draws_after_restore_equal_draws_after_capture():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    # leave a cached Gaussian in Python's and numpy's generators: it is part of their state
    random.gauss(0, 1)
    np.random.standard_normal()
    state = capture_rng_state()
    expected = draw()
    draw()
    restore_rng_state(state)
    assert draw() == expected


def test_state_survives_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(4)
    state = capture_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    expected = draw()
    restore_rng_state(loaded)
    assert draw() == expected


def test_restore_does_not_alias_the_captured_state():
    state = capture_rng_state()
    expected = draw()
    restore_rng_state(state)
    draw()
    restore_rng_state(state)  # the first restore must not have consumed or changed the state
    assert draw() == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_different_number_of_cuda_devices_is_rejected():
    state = capture_rng_state()
    state["cuda"] = state["cuda"] + [state["cuda"][0]]
    with pytest.raises(ValueError, match="CUDA devices are visible"):
        restore_rng_state(state)
