"""Invariant 2: the fast path (tower-sorted stream) equals the paper's Algorithm 1 reference."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from mot.model import build_model
from mot.model.reference import reference_logits

from tests.helpers import random_batch, tiny_config

THREE = ["text", "image", "speech"]
ARCHITECTURES = {
    "mot-2": dict(),
    "dense-2": dict(towers={"text": "shared", "image": "shared"}),
    "mot-3": dict(modalities=THREE),
    "loo-image": dict(modalities=THREE, towers={"text": "ts", "speech": "ts", "image": "image"}),
    "loo-text": dict(modalities=THREE, towers={"text": "text", "image": "is", "speech": "is"}),
    "loo-speech": dict(modalities=THREE, towers={"text": "ti", "image": "ti", "speech": "speech"}),
    "ablation-ffn": dict(untied=["ffn"]),
    "ablation-ffn-attention": dict(modalities=THREE, untied=["ffn", "attention"]),
    "pre-norm-gqa": dict(norm_placement="pre", n_kv_heads=2),
    "layernorm-no-qknorm": dict(norm_type="layernorm", qk_norm=False),
    "moe4x-ec": dict(towers={"text": "shared", "image": "shared"}, moe={"towers": ["shared"]}),
    "mot-text-moe4x": dict(moe={"towers": ["text"]}),
    "untied-attention-shared-moe4x": dict(untied=["attention"], moe={"towers": ["shared"]}),
    "mot-text-moe4x-tc": dict(moe={"towers": ["text"], "routing": "token_choice"}),
    "mot-3-untied-head": dict(modalities=THREE, untied=["ffn", "attention", "norms", "head"]),
}


def assert_fast_equals_reference(config, tokens, modalities, **metadata):
    model = build_model(config)
    with torch.no_grad():
        fast = model(tokens, modalities, **metadata).logits
        reference = reference_logits(model, tokens, modalities, **metadata)
    assert fast.shape == reference.shape == (*tokens.shape, config.vocab_size)
    assert (fast - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_fast_path_equals_algorithm_1(name):
    config = tiny_config(**ARCHITECTURES[name])
    tokens, modalities = random_batch(config, seed=hash(name) % 1000)
    assert_fast_equals_reference(config, tokens, modalities)


@pytest.mark.parametrize("name", ["mot-2", "mot-3", "loo-image", "moe4x-ec"])
def test_fast_path_equals_reference_with_documents_and_spans(name):
    config = tiny_config(**ARCHITECTURES[name])
    tokens, modalities = random_batch(config, batch=2, length=20, seed=3)
    documents = torch.tensor([[0] * 7 + [1] * 13, [0] * 20])
    spans = torch.zeros_like(tokens)
    spans[0, 9:14] = 1
    spans[1, 2:6], spans[1, 10:18] = 1, 2
    assert_fast_equals_reference(config, tokens, modalities, document_ids=documents, span_ids=spans)


@pytest.mark.parametrize("name", ["mot-2", "mot-3", "loo-text", "mot-text-moe4x"])
def test_fast_path_equals_reference_when_a_modality_is_absent(name):
    config = tiny_config(**ARCHITECTURES[name])
    tokens, modalities = random_batch(config, seed=5, absent=(1,))
    assert (modalities != 1).all()
    assert_fast_equals_reference(config, tokens, modalities)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_fast_path_equals_reference_on_random_interleavings(data):
    num_modalities = data.draw(st.integers(2, 3), label="modalities")
    names = THREE[:num_modalities]
    tower_names = data.draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=num_modalities,
                                     max_size=num_modalities), label="towers")
    length = data.draw(st.integers(1, 16), label="length")
    batch = data.draw(st.integers(1, 3), label="batch")
    mods = data.draw(st.lists(st.integers(0, num_modalities - 1), min_size=batch * length,
                              max_size=batch * length), label="modality ids")
    config = tiny_config(modalities=names, towers=dict(zip(names, tower_names)))
    tokens = torch.randint(0, config.vocab_size, (batch, length))
    assert_fast_equals_reference(config, tokens, torch.tensor(mods).view(batch, length))
