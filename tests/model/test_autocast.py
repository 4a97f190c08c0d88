"""Mixed precision: every architecture runs forward and backward under bf16 autocast (as GPU
training will) and stays close to its fp32 result."""

import pytest
import torch

from mot.model import build_model

from tests.helpers import random_batch, tiny_config

THREE = ["text", "image", "speech"]


@pytest.mark.parametrize("overrides", [
    dict(modalities=THREE),
    dict(towers={"text": "shared", "image": "shared"}, norm_type="layernorm"),
    dict(towers={"text": "shared", "image": "shared"}, moe={"towers": ["shared"]}),
    dict(moe={"towers": ["text"], "routing": "token_choice"}),
    dict(untied=["ffn"], norm_placement="pre", n_kv_heads=2),
])
def test_bf16_autocast_forward_and_backward(overrides):
    model = build_model(tiny_config(**overrides))
    tokens, modalities = random_batch(model.config, seed=40)
    documents = torch.zeros_like(tokens)
    documents[:, 12:] = 1
    with torch.no_grad():
        full = model(tokens, modalities, document_ids=documents).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(tokens, modalities, document_ids=documents).logits
    assert mixed.dtype == torch.bfloat16
    mixed.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert (mixed.float() - full).abs().max().item() < 0.05
