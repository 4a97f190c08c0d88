"""KL-VAE image tokenizer on sklearn digits (32x32 RGB -> 4x4x4 latents): shapes, sampling,
scaling factor, training, determinism, save/load, fingerprint, bad input. Tiny config (width 8)
and 200 steps so the file runs in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mot.config import ConfigError
from mot.io import CheckpointError
from mot.tokenizers.fingerprint import fingerprint
from mot.tokenizers.image_vae import ImageVAE, ImageVAEConfig, evaluate_image_vae, train_image_vae
from mot.tokenizers.image_vq import ImageVQ, ImageVQConfig

TINY = ImageVAEConfig(width=8)
STEPS = 200
#: Held-out reconstruction MSE (pixels in [0, 1]) after STEPS steps: measured 0.0073 on this
#: config and seed; an untrained model scores ~0.17. The bound leaves ~2x for other platforms.
MSE_BOUND = 0.015


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(digits):
    return train_image_vae(digits, TINY, steps=STEPS, batch_size=16, seed=0, log_every=50)


def test_encode_decode_shapes_dtypes_and_range(digits):
    model = ImageVAE(ImageVAEConfig())
    assert model.config.latent_shape == (4, 4, 4)
    latents = model.encode(digits[:5])
    assert latents.shape == (5, 4, 4, 4) and latents.dtype == torch.float32
    images = model.decode(latents)
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    as_float = torch.from_numpy(digits[:5]).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(model.encode(as_float), latents)


def test_sampling_uses_the_generator(trained, digits):
    model, _ = trained
    mean = model.encode(digits[:4])
    first = model.encode(digits[:4], sample=True, generator=torch.Generator().manual_seed(3))
    again = model.encode(digits[:4], sample=True, generator=torch.Generator().manual_seed(3))
    other = model.encode(digits[:4], sample=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first, mean)
    assert (first - mean).abs().mean() < mean.abs().mean()  # a draw stays near its mean


def test_training_reduces_error_and_scales_latents_to_unit_variance(trained, digits):
    model, metrics = trained
    untrained = evaluate_image_vae(ImageVAE(TINY), digits[:100])
    print(f"\ntrained held-out {metrics['recon_mse']:.5f} untrained {untrained['recon_mse']:.5f}")
    assert metrics["recon_mse"] < MSE_BOUND
    assert metrics["recon_mse"] < untrained["recon_mse"] / 10
    assert metrics["history"][-1]["mse"] < metrics["history"][0]["mse"] / 10
    assert model.config.scaling_factor == metrics["scaling_factor"] != 1.0
    assert 0.8 < metrics["latent_std"] < 1.25  # measured on held-out images, scaled on training ones
    assert 0.9 < model.encode(digits, sample=True, generator=torch.Generator().manual_seed(0)).std() < 1.1


def test_save_load_round_trip_and_fingerprint(trained, digits, tmp_path):
    model, _ = trained
    model.save(tmp_path / "vae")
    loaded = ImageVAE.load(tmp_path / "vae")
    assert loaded.config == model.config  # the scaling factor travels in config.json
    latents = model.encode(digits[:20])
    assert torch.equal(loaded.encode(digits[:20]), latents)
    assert torch.equal(loaded.decode(latents), model.decode(latents))

    assert fingerprint(tmp_path / "vae") == model.fingerprint() == loaded.fingerprint()
    with torch.no_grad():
        loaded.encoder[0].weight[0, 0, 0, 0] += 1e-3
    assert loaded.fingerprint() != model.fingerprint()
    loaded = ImageVAE.load(tmp_path / "vae")
    loaded.config.scaling_factor *= 2
    assert loaded.fingerprint() != model.fingerprint()


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 28, 28, 3), np.uint8), r"uint8 images must have shape \[B, 32, 32, 3\].*\[2, 28, 28, 3\]"),
    (torch.zeros(2, 1, 32, 32), r"float images must have shape \[B, 3, 32, 32\].*\[2, 1, 32, 32\]"),
    (torch.full((1, 3, 32, 32), -3.0), r"must lie in \[-1, 1\]; got values in \[-3, -3\]"),
])
def test_bad_images_name_what_is_wrong(images, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ImageVAE(TINY).encode(images)


@pytest.mark.parametrize("latents, message", [
    (torch.zeros(1, 4, 8, 8), r"latents must have shape \[B, 4, 4, 4\]; got \[1, 4, 8, 8\]"),
    (torch.zeros(1, 64), r"\[B, 4, 4, 4\]; got \[1, 64\]"),
    (torch.zeros(1, 4, 4, 4, dtype=torch.long), r"latents must be a float tensor; got torch.int64"),
])
def test_bad_latents_name_what_is_wrong(latents, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ImageVAE(TINY).decode(latents)


@pytest.mark.parametrize("field, value, message", [
    ("latent_channels", 0, r"latent_channels=0"),
    ("scaling_factor", -1.0, r"scaling_factor=-1.0"),
    ("image_size", 36, r"image_size=36: must be divisible by the downsampling factor 8"),
])
def test_bad_config_names_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ImageVAEConfig(**{field: value})


def test_bad_directories_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match=f"{missing} is not a directory"):
        ImageVAE.load(missing)

    saved = ImageVAE(TINY).save(tmp_path / "vae")
    config = saved / "config.json"
    config.unlink()
    with pytest.raises(CheckpointError, match=f"{config} does not exist"):
        ImageVAE.load(saved)
    config.write_text(json.dumps({**TINY.to_dict(), "scaling_factor": "big"}))
    with pytest.raises(CheckpointError, match=f"{config}: scaling_factor='big'"):
        ImageVAE.load(saved)
    config.write_text(json.dumps({**TINY.to_dict(), "latent_channels": 8}))
    with pytest.raises(CheckpointError, match="does not match the architecture.*wrong shape"):
        ImageVAE.load(saved)

    ImageVQ(ImageVQConfig(width=8)).save(tmp_path / "vq")
    with pytest.raises(CheckpointError, match=r"kind='image_vq': expected 'image_vae'"):
        ImageVAE.load(tmp_path / "vq")
