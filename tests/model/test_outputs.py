"""What the model returns: logits, the final hidden states and, on request, every layer's."""

import torch

from mot.model import build_model
from mot.model.reference import reference_logits

from tests.helpers import random_batch, tiny_config


def test_outputs_and_layer_states():
    model = build_model(tiny_config(modalities=["text", "image", "speech"], n_layers=3))
    tokens, modalities = random_batch(model.config, seed=50)
    with torch.no_grad():
        out = model(tokens, modalities, output_layer_states=True)
        plain = model(tokens, modalities)
    assert plain.layer_states is None
    assert torch.equal(out.logits, plain.logits)
    assert torch.equal(out.logits, model.head(out.hidden))
    assert len(out.layer_states) == 1 + model.config.n_layers
    assert all(state.shape == (*tokens.shape, model.config.d_model) for state in out.layer_states)
    assert torch.equal(out.layer_states[0], model.embed(tokens))  # in sequence order
    assert not torch.equal(out.layer_states[1], out.layer_states[0])


def test_layer_states_follow_the_reference_through_the_stack():
    model = build_model(tiny_config(n_layers=2))
    tokens, modalities = random_batch(model.config, seed=51)
    with torch.no_grad():
        out = model(tokens, modalities, output_layer_states=True)
        reference = reference_logits(model, tokens, modalities)
        # the last residual state, through the per-tower final norm and the head, gives the logits
        towers = model.final_norm.towers
        last = out.layer_states[-1]
        normed = torch.where((modalities == 0)[..., None], towers["text"](last), towers["image"](last))
    assert torch.allclose(model.head(normed), reference, atol=1e-5, rtol=0)
