"""A sample's output does not depend on the other samples of its batch or their modality mix."""

import pytest
import torch

from mot.model import build_model

from tests.helpers import interleaved_modalities, tiny_config

THREE = ["text", "image", "speech"]


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(modalities=THREE),
    dict(modalities=THREE, towers={"text": "ts", "speech": "ts", "image": "image"}, norm_placement="pre"),
    dict(moe={"towers": ["image"], "routing": "token_choice"}),
])
def test_sample_output_is_independent_of_the_rest_of_the_batch(overrides):
    model = build_model(tiny_config(**overrides))
    count = len(model.config.modalities)
    tokens = torch.randint(0, 97, (4, 20))
    modalities = interleaved_modalities(4, 20, count, seed=13)
    modalities[1] = 0  # one sample of text only, one without text
    modalities[2] = (modalities[2] % (count - 1)) + 1
    with torch.no_grad():
        together = model(tokens, modalities).logits
        for i in range(4):
            alone = model(tokens[i:i + 1], modalities[i:i + 1]).logits
            assert torch.allclose(together[i:i + 1], alone, atol=1e-5, rtol=0)
        swapped = model(tokens[[3, 2, 1, 0]], modalities[[3, 2, 1, 0]]).logits
    assert torch.allclose(swapped, together[[3, 2, 1, 0]], atol=1e-5, rtol=0)
