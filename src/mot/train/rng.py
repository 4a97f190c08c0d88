"""Capture and restore every global random number generator a training step may draw from.

Exact resume (docs/design.md invariant 6) needs the generators to continue where they stopped:
Python's ``random``, numpy's global generator, torch's CPU generator and each CUDA device's.
The state is made of tensors, numbers, strings and lists only, so it can be written with
``torch.save`` and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any, Dict

import numpy as np
import torch


def capture_rng_state() -> Dict[str, Any]:
    """The state of Python's ``random``, numpy's global generator, torch's CPU generator and,
    when CUDA is available, the generator of every visible CUDA device."""
    version, internal, gauss_next = random.getstate()
    bit_generator, key, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: Dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        # the Mersenne Twister key as int64: uint32 has no full torch support
        "numpy": [bit_generator, torch.from_numpy(key.astype(np.int64)), int(position), int(has_gauss),
                  float(cached_gaussian)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Put every generator back into the ``state`` that :func:`capture_rng_state` returned.

    CUDA states are restored when CUDA is available; the number of devices must then be the same
    as at capture. Without CUDA, saved CUDA states are ignored: nothing can draw from them.
    """
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    bit_generator, key, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((bit_generator, key.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and "cuda" in state:
        if len(state["cuda"]) != torch.cuda.device_count():
            raise ValueError(f"the RNG state holds {len(state['cuda'])} CUDA generators but "
                             f"{torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_rng_state_all(state["cuda"])
