"""Serving's padded way of running towers (every part padded to the largest, the linear maps as one
batched matmul, paper section 6.3) gives the grouped way's outputs, and computes on the padding."""

import pytest
import torch

from mot.model import build_model
from mot.model.towers import PerTower

from tests.helpers import random_batch, tiny_config

ARCHITECTURES = {
    "mot": dict(modalities=["text", "image", "speech"]),
    "hybrid": dict(modalities=["text", "image", "speech"],
                   moe={"towers": ["text"], "routing": "token_choice", "num_experts": 4}),
    "leave-one-out": dict(modalities=["text", "image", "speech"],
                          towers={"text": "text_speech", "image": "image", "speech": "text_speech"}),
    "untied-head": dict(modalities=["text", "image"], untied=["ffn", "attention", "norms", "head"]),
}


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
@pytest.mark.parametrize("absent", [(), (1,)])
def test_padded_towers_give_the_grouped_outputs(architecture, absent):
    model = build_model(tiny_config(**ARCHITECTURES[architecture])).eval()
    tokens, modalities = random_batch(model.config, batch=3, length=20, seed=2, absent=absent)
    with torch.no_grad(), model.causal_routing():
        grouped = model(tokens, modalities).logits
        with model.padded_towers():
            padded = model(tokens, modalities).logits
        again = model(tokens, modalities).logits
    torch.testing.assert_close(padded, grouped, atol=1e-5, rtol=1e-5)
    assert torch.equal(again, grouped)  # the padded way is off again outside the block


def test_the_padded_way_runs_every_tower_on_the_largest_part(monkeypatch):
    model = build_model(tiny_config(modalities=["text", "image"])).eval()
    tokens, modalities = random_batch(model.config, batch=1, length=12, seed=0)
    modalities[:] = 0
    modalities[0, -2:] = 1  # 10 text tokens, 2 image tokens
    shapes = []
    original = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda a, b: shapes.append(tuple(a.shape)) or original(a, b))
    with torch.no_grad(), model.padded_towers():
        model(tokens, modalities)
    assert shapes and all(shape[:2] == (2, 10) for shape in shapes)  # both towers, 10 rows each
    assert not any(module.padded for module in model.modules() if isinstance(module, PerTower))
