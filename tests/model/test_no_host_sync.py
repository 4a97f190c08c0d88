"""Invariant 3: with a precomputed routing plan, the forward pass never reads device values on
the host and never indexes with boolean masks."""

import pytest
import torch

from mot.model import build_model

from tests.helpers import SYNCING_OPS, RecordOps, random_batch, tiny_config


@pytest.mark.parametrize("overrides", [
    dict(modalities=["text", "image", "speech"]),
    dict(towers={"text": "shared", "image": "shared"}, moe={"towers": ["shared"]}),
    dict(attention_backend="sdpa", norm_placement="pre"),
])
def test_forward_and_backward_with_a_plan_never_sync(overrides):
    model = build_model(tiny_config(**overrides))
    tokens, modalities = random_batch(model.config, seed=30)
    documents = torch.zeros_like(tokens)
    documents[:, 10:] = 1
    plan = model.plan_for(modalities)
    recorder = RecordOps()
    with recorder:
        logits = model(tokens, modalities, document_ids=documents, plan=plan).logits
        logits.sum().backward()
    assert recorder.names, "the recorder saw no op"
    assert not SYNCING_OPS & set(recorder.names)
    assert not recorder.bool_indexing


def test_the_recorder_catches_a_sync():
    recorder = RecordOps()
    with recorder:
        x = torch.arange(4)
        x[x > 1].sum().item()
    assert {"_local_scalar_dense"} <= set(recorder.names) and recorder.bool_indexing
