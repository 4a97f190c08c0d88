"""FSQ image tokenizer on sklearn digits (32x32 RGB): shapes, training, determinism, save/load,
fingerprint, bad input. Tiny config (width 8) and 200 steps so the file runs in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mot.config import ConfigError
from mot.io import CheckpointError
from mot.tokenizers.fingerprint import fingerprint
from mot.tokenizers.image_vae import ImageVAE, ImageVAEConfig
from mot.tokenizers.image_vq import FSQ, ImageVQ, ImageVQConfig, evaluate_image_vq, train_image_vq

TINY = ImageVQConfig(width=8)
STEPS = 200
#: Held-out reconstruction MSE (pixels in [0, 1]) after STEPS steps: measured 0.0025 on this
#: config and seed; an untrained model scores ~0.2. The bound leaves ~2x for other platforms.
MSE_BOUND = 0.006


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(digits):
    return train_image_vq(digits, TINY, steps=STEPS, batch_size=16, seed=0, log_every=50)


def test_digits_are_32x32_rgb_uint8(digits):
    assert digits.shape == (600, 32, 32, 3) and digits.dtype == np.uint8
    assert digits.max() == 255 and digits.min() < 16
    assert (digits[..., 0] == digits[..., 2]).all()  # grey, repeated over channels


def test_encode_decode_shapes_dtypes_and_range(digits):
    model = ImageVQ(ImageVQConfig())
    assert model.codebook_size == 1000 and model.config.tokens_per_image == 64
    codes = model.encode(digits[:5])
    assert codes.shape == (5, 64) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < model.codebook_size
    images = model.decode(codes)
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    as_float = torch.from_numpy(digits[:5]).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(model.encode(as_float), codes)  # both input conventions agree


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (2, 3), (7, 5, 5, 5, 5)])
def test_fsq_codes_cover_the_codebook_and_invert(levels):
    quantizer = FSQ(levels)
    size = int(np.prod(levels))
    z = torch.randn(4, len(levels), 16, 16) * 3
    quantized, codes = quantizer(z)
    assert 0 <= codes.min() and codes.max() < size
    torch.testing.assert_close(quantizer.codes_to_latents(codes), quantized)
    every = quantizer.codes_to_latents(torch.arange(size).view(1, 1, size))  # [1, D, 1, size]
    assert every.abs().max() <= 1
    assert len({tuple(column) for column in every[0, :, 0].T.tolist()}) == size  # all distinct
    # Latents of code k quantize back to code k (pre-squash values found by inverting the bound).
    values = every * (quantizer.levels // 2).view(1, -1, 1, 1)
    _, again = quantizer(_inverse_bound(quantizer, values))
    assert torch.equal(again.flatten(), torch.arange(size))


def _inverse_bound(quantizer: FSQ, values: torch.Tensor) -> torch.Tensor:
    """Bisection for z with bound(z) == values (bound is increasing)."""
    low, high = torch.full_like(values, -20.0), torch.full_like(values, 20.0)
    for _ in range(60):
        middle = (low + high) / 2
        below = quantizer.bound(middle) < values
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    return (low + high) / 2


def test_training_reduces_reconstruction_error(trained, digits):
    model, metrics = trained
    untrained = evaluate_image_vq(ImageVQ(TINY), digits[:100])
    print(f"\ntrained held-out {metrics['recon_mse']:.5f} untrained {untrained['recon_mse']:.5f}")
    assert metrics["recon_mse"] < MSE_BOUND
    assert metrics["recon_mse"] < untrained["recon_mse"] / 10
    assert metrics["psnr"] > 10 * np.log10(1 / MSE_BOUND)
    history = metrics["history"]
    assert history[-1]["mse"] < history[0]["mse"] / 20
    assert metrics["train_images"] == 540 and metrics["heldout_images"] == 60
    # The entropy regulariser keeps the codebook in use even on this low-detail data.
    assert metrics["codebook_usage"] > 0.5 and metrics["perplexity"] > 300


def test_save_load_round_trip_and_fingerprint(trained, digits, tmp_path):
    model, _ = trained
    model.save(tmp_path / "vq")
    assert sorted(p.name for p in (tmp_path / "vq").iterdir()) == ["checksums.json", "config.json", "model.safetensors"]
    loaded = ImageVQ.load(tmp_path / "vq")
    assert loaded.config == model.config
    codes = model.encode(digits[:20])
    assert torch.equal(loaded.encode(digits[:20]), codes)
    assert torch.equal(loaded.decode(codes), model.decode(codes))

    assert fingerprint(tmp_path / "vq") == model.fingerprint() == loaded.fingerprint()
    loaded.save(tmp_path / "again")
    assert fingerprint(tmp_path / "again") == fingerprint(tmp_path / "vq")
    with torch.no_grad():
        loaded.decoder[0].bias[0] += 1e-3
    assert loaded.fingerprint() != model.fingerprint()


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 28, 28, 3), np.uint8), r"uint8 images must have shape \[B, 32, 32, 3\].*\[2, 28, 28, 3\]"),
    (np.zeros((32, 32, 3), np.uint8), r"\[B, 32, 32, 3\].*got \[32, 32, 3\]"),
    (torch.zeros(2, 32, 32, 3), r"float images must have shape \[B, 3, 32, 32\].*\[2, 32, 32, 3\]"),
    (torch.full((1, 3, 32, 32), 2.0), r"must lie in \[-1, 1\]; got values in \[2, 2\]"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.int32), r"uint8 .* or float .*got dtype torch.int32"),
    ([[0]], r"torch.Tensor or numpy array, not list"),
])
def test_bad_images_name_what_is_wrong(images, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ImageVQ(TINY).encode(images)


@pytest.mark.parametrize("codes, message", [
    (torch.full((1, 64), 1000), r"code ids must lie in \[0, 1000\); got values in \[1000, 1000\]"),
    (torch.full((1, 64), -1), r"\[0, 1000\); got values in \[-1, -1\]"),
    (torch.zeros(1, 63, dtype=torch.long), r"codes must have shape \[B, 64\]; got \[1, 63\]"),
    (torch.zeros(1, 8, 8, dtype=torch.long), r"\[B, 64\]; got \[1, 8, 8\]"),
    (torch.zeros(1, 64), r"codes must be an integer tensor; got torch.float32"),
])
def test_bad_codes_name_what_is_wrong(codes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ImageVQ(TINY).decode(codes)


@pytest.mark.parametrize("field, value, message", [
    ("levels", (8, 1), r"levels=\[8, 1\]"),
    ("image_size", 30, r"image_size=30: must be divisible by the downsampling factor 4"),
    ("width", 0, r"width=0"),
    ("channel_mult", (), r"channel_mult=\(\)"),
])
def test_bad_config_names_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ImageVQConfig(**{field: value})


def test_bad_directories_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match=f"{missing} is not a directory"):
        ImageVQ.load(missing)

    saved = ImageVQ(TINY).save(tmp_path / "vq")
    weights, config = saved / "model.safetensors", saved / "config.json"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{weights} is corrupt or truncated"):
        ImageVQ.load(saved)
    weights.unlink()
    with pytest.raises(CheckpointError, match=f"{weights} does not exist"):
        ImageVQ.load(saved)

    ImageVQ(TINY).save(saved)
    config.write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{config} is not valid JSON"):
        ImageVQ.load(saved)
    config.write_text(json.dumps({**TINY.to_dict(), "colour": 1}))
    with pytest.raises(CheckpointError, match=r"unknown image_vq config key\(s\) \['colour'\]"):
        ImageVQ.load(saved)
    config.write_text(json.dumps({**TINY.to_dict(), "width": 16}))
    with pytest.raises(CheckpointError, match=f"{weights} does not match the architecture.*wrong shape"):
        ImageVQ.load(saved)

    ImageVAE(ImageVAEConfig(width=8)).save(tmp_path / "vae")
    with pytest.raises(CheckpointError, match=r"kind='image_vae': expected 'image_vq'"):
        ImageVQ.load(tmp_path / "vae")
