"""The optional untied output head (``untied: [..., head]``): one head per tower, each position's
logits from its own tower's head, and nothing else changes."""

import torch

from mot.model import build_model
from mot.model.towers import PerTower

from tests.helpers import random_batch, tiny_config

UNTIED_HEAD = ["ffn", "attention", "norms", "head"]


def test_each_position_uses_its_towers_head():
    config = tiny_config(untied=UNTIED_HEAD)
    model = build_model(config).eval()
    assert isinstance(model.head, PerTower) and list(model.head.towers) == ["text", "image"]
    tokens, modalities = random_batch(config)
    with torch.no_grad():
        output = model(tokens, modalities)
        for index, tower in enumerate(config.tower_names):
            at = modalities == index
            expected = model.head.towers[tower](output.hidden[at])
            assert torch.allclose(output.logits[at], expected, atol=1e-6, rtol=0)


def test_equal_heads_give_the_shared_heads_logits():
    shared = build_model(tiny_config()).eval()
    untied = build_model(tiny_config(untied=UNTIED_HEAD)).eval()
    state = {name: tensor for name, tensor in shared.state_dict().items() if name != "head.weight"}
    state.update({f"head.towers.{tower}.weight": shared.head.weight for tower in ("text", "image")})
    untied.load_state_dict(state)
    tokens, modalities = random_batch(shared.config)
    with torch.no_grad():
        assert torch.allclose(untied(tokens, modalities).logits, shared(tokens, modalities).logits, atol=1e-6, rtol=0)


def test_a_single_tower_keeps_one_plain_head():
    model = build_model(tiny_config(towers={"text": "shared", "image": "shared"}, untied=UNTIED_HEAD))
    assert isinstance(model.head, torch.nn.Linear)
    assert "head.weight" in model.state_dict()


def test_heads_train_and_save(tmp_path):
    model = build_model(tiny_config(untied=UNTIED_HEAD))
    tokens, modalities = random_batch(model.config)
    model(tokens, modalities).logits.sum().backward()
    assert all(head.weight.grad is not None for head in model.output_heads())
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
