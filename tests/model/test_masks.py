"""Invariant 5, tested by perturbation: what each output may and may not depend on."""

import pytest
import torch

from mot.model import MaskSpec, build_model
from mot.model.attention_backends import flex_available, get_backend
from mot.model.masks import positions_from_documents

from tests.helpers import random_batch, tiny_config

BACKENDS = ["reference", "sdpa"] + (["flex"] if flex_available() else [])


def logits_after_changing(model, tokens, modalities, j, **metadata):
    with torch.no_grad():
        before = model(tokens, modalities, **metadata).logits
        changed = tokens.clone()
        changed[:, j] = (changed[:, j] + 1) % model.config.vocab_size
        after = model(changed, modalities, **metadata).logits
    return (after - before).abs().amax(dim=(0, 2))  # [L]: how much each position moved


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_later_token_never_changes_an_earlier_output(backend):
    model = build_model(tiny_config(attention_backend=backend))
    tokens, modalities = random_batch(model.config, batch=2, length=16, seed=7)
    for j in (0, 5, 15):
        moved = logits_after_changing(model, tokens, modalities, j)
        assert (moved[:j] == 0).all()
        assert (moved[j:] > 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_inside_a_bidirectional_span_a_later_token_changes_earlier_ones(backend):
    model = build_model(tiny_config(attention_backend=backend))
    tokens, modalities = random_batch(model.config, batch=1, length=16, seed=8)
    spans = torch.zeros_like(tokens)
    spans[:, 4:10] = 1  # e.g. an image
    moved = logits_after_changing(model, tokens, modalities, 8, span_ids=spans)
    assert (moved[:4] == 0).all()  # before the span: causal
    assert (moved[4:] > 0).all()  # the whole span sees its later patch; text after it too
    moved = logits_after_changing(model, tokens, modalities, 12, span_ids=spans)
    assert (moved[:12] == 0).all()  # a token after the span does not leak back into it


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_documents_never_see_each_other(backend):
    model = build_model(tiny_config(attention_backend=backend))
    tokens, modalities = random_batch(model.config, batch=2, length=18, seed=9)
    documents = torch.tensor([[0] * 6 + [1] * 7 + [2] * 5] * 2)
    spans = torch.zeros_like(tokens)
    spans[:, 2:9] = 1  # a span crossing a document boundary still cannot cross it
    for j, document in ((3, 0), (8, 1), (14, 2)):
        moved = logits_after_changing(model, tokens, modalities, j, document_ids=documents, span_ids=spans)
        outside = documents[0] != document
        assert (moved[outside] == 0).all()
        assert (moved[(documents[0] == document) & (torch.arange(18) >= j)] > 0).all()


def test_packed_document_equals_the_same_document_alone():
    model = build_model(tiny_config())
    tokens, modalities = random_batch(model.config, batch=1, length=20, seed=10)
    documents = torch.tensor([[0] * 8 + [1] * 12])
    with torch.no_grad():
        packed = model(tokens, modalities, document_ids=documents).logits
        alone = model(tokens[:, 8:], modalities[:, 8:]).logits
    assert torch.allclose(packed[:, 8:], alone, atol=1e-5, rtol=0)


def test_positions_restart_at_each_document():
    documents = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    assert positions_from_documents(documents).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("kind", ["causal", "documents", "spans", "both"])
def test_backends_agree_with_the_dense_mask_reference(backend, gqa, kind):
    torch.manual_seed(0)
    batch, heads, kv_heads, length, dim = 2, 4, 2 if gqa else 4, 40, 16
    q = torch.randn(batch, heads, length, dim)
    k, v = torch.randn(2, batch, kv_heads, length, dim)
    documents = torch.tensor([[0] * 15 + [1] * 25, [0] * 40]) if kind in ("documents", "both") else None
    spans = None
    if kind in ("spans", "both"):
        spans = torch.zeros(batch, length, dtype=torch.long)
        spans[0, 3:9], spans[1, 20:36] = 1, 4
    spec = MaskSpec(documents, spans)
    outputs = {}
    for name in ("reference", backend):
        kernel = get_backend(name)
        outputs[name] = kernel.attend(q, k, v, kernel.prepare(spec, batch, length, length, q.dtype, q.device))
    assert torch.allclose(outputs[backend], outputs["reference"], atol=1e-5, rtol=0)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="attention_backend='cudnn'"):
        get_backend("cudnn")


@pytest.mark.parametrize("backend", BACKENDS)
def test_queries_can_be_the_last_rows_of_the_keys_as_with_a_kv_cache(backend):
    torch.manual_seed(0)
    batch, heads, length, new, dim = 2, 4, 24, 5, 16
    q = torch.randn(batch, heads, length, dim)
    k, v = torch.randn(2, batch, heads, length, dim)
    spans = torch.zeros(batch, length, dtype=torch.long)
    spans[:, 17:22] = 1  # a span that the new queries are inside of
    spec = MaskSpec(torch.zeros(batch, length, dtype=torch.long), spans)
    kernel = get_backend(backend)
    full = kernel.attend(q, k, v, kernel.prepare(spec, batch, length, length, q.dtype, q.device))
    last = kernel.attend(q[:, :, -new:], k, v, kernel.prepare(spec, batch, new, length, q.dtype, q.device))
    assert torch.allclose(last, full[:, :, -new:], atol=1e-5, rtol=0)

