"""Fixtures shared by the image tokenizer tests."""

import numpy as np
import pytest
import torch

from mot.data.sources.images import digits as digit_documents


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convs gain nothing from a second thread, and on a shared CPU OpenMP's spinning
    threads make them many times slower; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The corpus's digits (dark ink on white, 32x32 RGB uint8), the first 600."""
    return np.stack([document.segments[0].array for document in digit_documents(limit=600)])
