"""What both image tokenizers' training promises: the seed alone decides the result, and the log shows
progress and loss."""

import re

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


@pytest.mark.parametrize("train,config,parts", [(train_image_vq, ImageVQConfig(width=8), "mse=.*, entropy="),
                                                (train_image_vae, ImageVAEConfig(width=8), "mse=.*, kl=")])
def test_training_reports_its_progress_and_loss_through_log(digits, train, config, parts, monkeypatch):
    monkeypatch.setenv("MOT_PROGRESS", "lines")
    lines = []
    train(digits, config, steps=3, batch_size=8, seed=0, log_every=0, log=lines.append)
    assert len(lines) == 1  # the final line: 3 steps take less than the 30 s between lines
    assert re.fullmatch(rf"training image_v(q|ae): 3/3 steps \(100%\), .* steps/s, 0:\d\d elapsed, "
                        rf"loss=[-\d.e]+, {parts}[-\d.e]+", lines[0])
