"""Invariant 8 for the model's inputs: every bad input is an error naming what is wrong."""

import pytest
import torch

from mot.model import build_model
from mot.model.inputs import InputError

from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_config())


def ok_batch():
    return torch.randint(0, 97, (2, 8)), torch.randint(0, 2, (2, 8))


def test_token_outside_the_vocabulary(model):
    tokens, modalities = ok_batch()
    tokens[1, 3] = 97
    with pytest.raises(InputError, match=r"tokens\[1, 3\] = 97 is outside the vocabulary \(vocab_size=97\)"):
        model(tokens, modalities)
    tokens[1, 3] = -1
    with pytest.raises(InputError, match=r"tokens\[1, 3\] = -1"):
        model(tokens, modalities)


def test_modality_outside_the_modality_list(model):
    tokens, modalities = ok_batch()
    modalities[0, 5] = 2
    with pytest.raises(InputError, match=r"modality_ids\[0, 5\] = 2 is outside the modality list \['text', 'image'\]"):
        model(tokens, modalities)


@pytest.mark.parametrize("field", ["modality_ids", "positions", "document_ids", "span_ids"])
def test_shape_mismatch_names_the_field(model, field):
    tokens, modalities = ok_batch()
    inputs = dict(modality_ids=modalities)
    inputs[field] = torch.zeros(2, 7, dtype=torch.long)
    with pytest.raises(InputError, match=rf"{field} has shape \(2, 7\) but tokens has \(2, 8\)"):
        model(tokens, **inputs)


def test_wrong_rank_and_dtype_and_length(model):
    tokens, modalities = ok_batch()
    with pytest.raises(InputError, match=r"tokens must have shape \[batch, seq_len\], got \(16,\)"):
        model(tokens.flatten(), modalities.flatten())
    with pytest.raises(InputError, match="modality_ids must hold integers, got dtype torch.float32"):
        model(tokens, modalities.float())
    long = torch.zeros(1, 129, dtype=torch.long)
    with pytest.raises(InputError, match="sequence length 129 exceeds max_seq_len=128"):
        model(long, long)
    with pytest.raises(InputError, match="positions"):
        model(tokens, modalities, positions=torch.full((2, 8), 500))


def test_a_plan_for_another_batch_shape_is_rejected(model):
    tokens, modalities = ok_batch()
    plan = model.plan_for(modalities[:, :5])
    with pytest.raises(InputError, match=r"routing plan is for a \[2, 5\] batch"):
        model(tokens, modalities, plan=plan)
