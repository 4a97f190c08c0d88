"""What both image tokenizers' training promises: the seed alone decides the result."""

import pytest
import torch

from mot.tokenizers.image_vae import ImageVAEConfig, train_image_vae
from mot.tokenizers.image_vq import ImageVQConfig, train_image_vq

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("train,config", [(train_image_vq, ImageVQConfig(width=8)),
                                          (train_image_vae, ImageVAEConfig(width=8))])
def test_training_is_deterministic_given_the_seed(digits, train, config):
    def run(seed):
        model, metrics = train(digits, config, steps=3, batch_size=8, seed=seed, log_every=1)
        return model.state_dict(), {k: v for k, v in metrics.items()
                                    if k not in ("train_seconds", "steps_per_second")}

    torch.manual_seed(1)  # the global random state must not matter
    first, first_metrics = run(7)
    torch.manual_seed(2)
    second, second_metrics = run(7)
    other, _ = run(8)
    assert first_metrics == second_metrics
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
