"""Gradient isolation and invariant 4 (every tower runs every step)."""

import pytest
import torch

from mot.model import build_model

from tests.helpers import random_batch, tiny_config

THREE = ["text", "image", "speech"]


def tower_gradients(model, tower: str) -> list[torch.Tensor]:
    return [p.grad for name, p in model.named_parameters() if f".towers.{tower}." in name]


def test_each_tower_module_sees_exactly_its_own_tokens():
    """The weights of tower t multiply only the rows of tower t's tokens, so no other token can
    reach them directly; their gradient is the sum over their own tokens."""
    model = build_model(tiny_config(modalities=THREE))
    tokens, modalities = random_batch(model.config, seed=11)
    seen = {}

    def record(tower):
        def hook(module, inputs, output):
            seen[tower] = inputs[0]
        return hook

    hooks = [module.register_forward_hook(record(tower))
             for tower, module in model.blocks[0].attention.qkv.towers.items()]
    model(tokens, modalities)
    for hook in hooks:
        hook.remove()
    for index, tower in enumerate(THREE):  # post-norm: block 0's QKV reads the raw embeddings
        own = model.embed(tokens[modalities == index])  # in sequence order, as the stable sort keeps it
        assert torch.equal(seen[tower], own)


@pytest.mark.parametrize("absent", [1, 2])
def test_a_tower_without_tokens_gets_zero_gradients_not_none(absent):
    model = build_model(tiny_config(modalities=THREE, moe={"towers": ["text"]}))
    tokens, modalities = random_batch(model.config, seed=12, absent=(absent,))
    model(tokens, modalities).logits.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    missing_tower = THREE[absent]
    grads = tower_gradients(model, missing_tower)
    assert grads and all((g == 0).all() for g in grads)
    present = [t for i, t in enumerate(THREE) if i != absent]
    for tower in present:
        assert any((g != 0).any() for g in tower_gradients(model, tower))


def test_every_weight_of_a_tower_is_used_by_its_tokens():
    model = build_model(tiny_config(modalities=THREE))
    tokens = torch.randint(0, 97, (1, 10))
    modalities = torch.full((1, 10), 2)  # speech only
    model(tokens, modalities).logits.sum().backward()
    assert all((g != 0).any() for g in tower_gradients(model, "speech"))
    assert all((g == 0).all() for g in tower_gradients(model, "text") + tower_gradients(model, "image"))
