"""Invariant 8 for the inputs that describe the mask, and for integer dtypes.

The mask joins every position of a document id or a non-zero span id (``masks.MaskSpec``), so an
id that comes back later in its row would leak: a span's first run would see its later run, two
runs of a document would see each other. The model refuses such ids when it checks its inputs
(without a routing plan), and any integer dtype of the ids gives the logits int64 gives.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mot import ModelConfig
from mot.data.packing import PAD_DOCUMENT, TokenizedDocument, pack
from mot.model import MaskSpec, build_model
from mot.model.inputs import InputError, check_mask_ids
from mot.model.kv_cache import KVCache
from mot.tokenizers.vocab import VocabLayout

from tests.helpers import random_batch, tiny_config


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_config()).eval()


def batch(model, rows=1, length=8, seed=0):
    return random_batch(model.config, batch=rows, length=length, seed=seed)


def test_a_span_that_comes_back_is_refused(model):
    spans = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 1]])
    assert MaskSpec(span_ids=spans).allowed(8, 8, 1, torch.device("cpu"))[0, 0, 7]  # the leak it would be
    with pytest.raises(InputError, match=r"span_ids\[0\]: span 1 ends at position 0 and comes back at position 7"):
        model(*batch(model), span_ids=spans)


def test_a_negative_span_id_is_refused(model):
    spans = torch.tensor([[0, 0, -1, -1, 0, 0, 0, 0]])
    with pytest.raises(InputError, match=r"span_ids\[0, 2\] = -1 is negative"):
        model(*batch(model), span_ids=spans)


def test_a_document_that_comes_back_is_refused(model):
    documents = torch.tensor([[0, 0, 0, 1, 1, 0, 0, 0]])
    assert MaskSpec(document_ids=documents).allowed(8, 8, 1, torch.device("cpu"))[0, 5, 0]  # the leak it would be
    with pytest.raises(InputError, match=r"document_ids\[0\]: document 0 ends at position 2 and comes back at "
                                         r"position 5"):
        model(*batch(model), document_ids=documents)


def test_the_error_names_the_row(model):
    documents = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [3, 3, 4, 4, 3, 5, 5, 5]])
    with pytest.raises(InputError, match=r"document_ids\[1\]: document 3 ends at position 1 and comes back at "
                                         r"position 4"):
        model(*batch(model, rows=2), document_ids=documents)


def test_transfusion_style_spans_and_packed_documents_are_accepted(model):
    tokens, modalities = batch(model, rows=2, length=12)
    documents = torch.tensor([[0] * 5 + [1] * 7, [7] * 4 + [2] * 6 + [-1] * 2])  # ids in any order, padding -1
    spans = torch.tensor([[0, 1, 1, 1, 0, 0, 2, 2, 0, 0, 3, 0], [0, 0, 5, 5, 0, 0, 0, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        model(tokens, modalities, document_ids=documents, span_ids=spans)


def test_a_packed_batch_is_accepted_without_its_plan():
    layout = VocabLayout({"text": 50, "image": 16})
    text, image = (layout.id_range(m)[0] for m in ("text", "image"))
    documents = [TokenizedDocument(f"d{i}", (("text", np.arange(text, text + 2 + i)),
                                             ("image", np.arange(image, image + 4)), ("text", np.array([text]))))
                 for i in range(4)]
    packed = pack(documents, seq_len=24, layout=layout, modality_tower_index=[0, 1], bidirectional=["image"])
    assert (packed.document_ids == PAD_DOCUMENT).any() and (packed.span_ids > 1).any()
    model = build_model(ModelConfig(vocab_size=layout.vocab_size, d_model=32, n_layers=1, n_heads=4,
                                    max_seq_len=32)).eval()
    inputs = packed.model_inputs()
    with torch.no_grad():
        checked = model(**{**inputs, "plan": None}).logits
        trusted = model(**inputs).logits
    assert torch.equal(checked, trusted)


def test_with_a_plan_the_ids_are_not_read(model, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the fast path must not read the mask ids")

    monkeypatch.setattr("mot.model.transformer.check_mask_ids", refuse)
    tokens, modalities = batch(model)
    with torch.no_grad():
        model(tokens, modalities, span_ids=torch.tensor([[1, 0, 0, 0, 0, 0, 0, 1]]), plan=model.plan_for(modalities))


def test_a_decoding_step_cannot_reopen_a_cached_span_or_document(model):
    tokens, modalities = batch(model)
    with torch.no_grad():
        cache = KVCache(model.config.n_layers)
        model(tokens[:, :4], modalities[:, :4], span_ids=torch.tensor([[0, 1, 1, 0]]), cache=cache)
        with pytest.raises(InputError, match=r"span_ids\[0\] \(the 4 cached positions, then the new ones\): "
                                             r"span 1 ends at position 2 and comes back at position 4"):
            model(tokens[:, 4:5], modalities[:, 4:5], span_ids=torch.tensor([[1]]), cache=cache)
        assert cache.length == 4  # the refused step left the cache as it was

        cache = KVCache(model.config.n_layers)  # left padding (document 0), then the prompt (document 1)
        model(tokens[:, :4], modalities[:, :4], document_ids=torch.tensor([[0, 0, 1, 1]]), cache=cache)
        with pytest.raises(InputError, match=r"document 0 ends at position 1 and comes back at position 4"):
            model(tokens[:, 4:5], modalities[:, 4:5], cache=cache)  # no ids: document 0, the padding's


def test_cached_steps_may_open_new_spans_and_continue_the_last_one(model):
    tokens, modalities = batch(model)
    spans = torch.tensor([[0, 1, 1, 1, 1, 0, 2, 2]])
    with torch.no_grad():
        whole = model(tokens, modalities, span_ids=spans).logits
        cache = KVCache(model.config.n_layers)
        model(tokens[:, :1], modalities[:, :1], span_ids=spans[:, :1], cache=cache)
        second = model(tokens[:, 1:], modalities[:, 1:], span_ids=spans[:, 1:], cache=cache).logits
        torch.testing.assert_close(second, whole[:, 1:], atol=1e-5, rtol=1e-5)
        cache = KVCache(model.config.n_layers)  # a span split over two steps is one run: accepted
        for start, stop in ((0, 3), (3, 7), (7, 8)):
            model(tokens[:, start:stop], modalities[:, start:stop], span_ids=spans[:, start:stop], cache=cache)
    assert cache.span_ids.tolist() == spans.tolist()


# ---- property: accepted exactly when every id is one run -----------------------------------------

def contiguous(row, skip_zero):
    """The reference: each id's positions form one range."""
    for value in set(row) - ({0} if skip_zero else set()):
        where = [i for i, v in enumerate(row) if v == value]
        if where[-1] - where[0] + 1 != len(where):
            return False
    return True


@st.composite
def runs(draw, length, spans):
    """A row of ``length`` ids made of runs of distinct ids (span rows: any number of 0 runs)."""
    lengths = draw(st.lists(st.integers(1, 4), min_size=length, max_size=length))
    ids = draw(st.lists(st.integers(1 if spans else -3, 30), unique=True, min_size=length, max_size=length))
    if spans:
        ids = [0 if draw(st.booleans()) else i for i in ids]
    row = [i for i, n in zip(ids, lengths) for _ in range(n)]
    return row[:length]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), length=st.integers(1, 12), rows=st.integers(1, 3), spans=st.booleans())
def test_contiguous_ids_are_always_accepted(data, length, rows, spans):
    ids = torch.tensor([data.draw(runs(length, spans)) for _ in range(rows)])
    cached = data.draw(st.integers(0, length - 1))
    check_mask_ids(None, ids, cached) if spans else check_mask_ids(ids, None, cached)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), length=st.integers(1, 12), rows=st.integers(1, 3), spans=st.booleans())
def test_random_ids_are_accepted_only_when_contiguous(data, length, rows, spans):
    values = st.integers(0, 3) if spans else st.integers(-1, 3)
    ids = [data.draw(st.lists(values, min_size=length, max_size=length)) for _ in range(rows)]
    expected = all(contiguous(row, skip_zero=spans) for row in ids)
    try:
        check_mask_ids(None, torch.tensor(ids)) if spans else check_mask_ids(torch.tensor(ids), None)
        accepted = True
    except InputError:
        accepted = False
    assert accepted == expected


# ---- integer dtypes ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8, torch.uint8])
@pytest.mark.parametrize("field", ["tokens", "modality_ids", "positions", "document_ids", "span_ids"])
def test_every_integer_dtype_gives_the_int64_logits(model, dtype, field):
    tokens, modalities = batch(model, rows=2, length=10)
    inputs = dict(tokens=tokens, modality_ids=modalities,
                  positions=torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4, 5]] * 2),
                  document_ids=torch.tensor([[0] * 4 + [1] * 6] * 2),
                  span_ids=torch.tensor([[0, 1, 1, 0, 0, 0, 2, 2, 2, 0]] * 2))
    with torch.no_grad():
        expected = model(**inputs).logits
        inputs[field] = inputs[field].to(dtype)
        assert torch.equal(model(**inputs).logits, expected)
        cache = KVCache(model.config.n_layers)  # the cached ids (int64 by then) and the new ones meet
        model(**{name: value[:, :4] for name, value in inputs.items()}, cache=cache)
        assert torch.allclose(model(**{name: value[:, 4:] for name, value in inputs.items()}, cache=cache).logits,
                              expected[:, 4:], atol=1e-5)


def test_integer_dtypes_of_the_latent_inputs_are_taken():
    config = ModelConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=4, max_seq_len=32,
                         latent=dict(modality="image", channels=4, patch_size=2, encoder="linear"))
    model = build_model(config).eval()
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    modalities = torch.zeros_like(tokens)
    modalities[:, 2:7] = 1  # <boi> and 4 patches
    spans = torch.zeros_like(tokens)
    spans[:, 3:7] = 1
    inputs = dict(modality_ids=modalities, span_ids=spans, latents=torch.randn(2, 4, 4, 4),
                  latent_starts=torch.tensor([[0, 3], [1, 3]]), timesteps=torch.tensor([10, 700]))
    with torch.no_grad():
        expected = model(tokens, **inputs).latent_prediction
        narrow = {**inputs, "latent_starts": inputs["latent_starts"].to(torch.uint8),
                  "timesteps": inputs["timesteps"].to(torch.int16)}
        assert torch.equal(model(tokens.to(torch.int32), **narrow).latent_prediction, expected)
