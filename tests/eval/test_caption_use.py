"""The caption-use analysis: its errors are the denoiser's noise errors under each prompt, the
bypass removes everything the transformer contributes, and bad arguments are clear errors."""

import json

import pytest
import torch

from mot.cli import main
from mot.config import ModelConfig
from mot.eval.caption_use import CONDITIONS, caption_use, transformer_output_zeroed
from mot.generate.transfusion import SamplingError, TransfusionSampler
from mot.model.transformer import build_model
from mot.objectives.diffusion_schedule import DiffusionScheduler
from mot.tokenizers.vocab import VocabLayout

LAYOUT = VocabLayout({"text": 40, "image": 1})
TEXT = LAYOUT.id_range("text")[0]
LATENT = (4, 4, 4)
CAPTIONS = [[TEXT + 1, TEXT + 7, TEXT + 3], [TEXT + 5], [TEXT + 2, TEXT + 2]]


def sampler(encoder="linear"):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=LAYOUT.vocab_size, d_model=32, n_layers=2, n_heads=4, max_seq_len=64,
                         modalities=["text", "image"],
                         latent=dict(modality="image", channels=4, patch_size=2, encoder=encoder,
                                     unet_channels=[8, 16], timestep_features=16))
    return TransfusionSampler(build_model(config).eval(), LAYOUT, LATENT, train_steps=50)


def test_each_error_is_the_noise_error_under_its_prompt():
    s = sampler()
    latents = torch.randn(3, *LATENT)
    errors = caption_use(s, latents, CAPTIONS, timesteps=(5, 40), seed=1)
    assert set(errors) == set(CONDITIONS) and all(set(by) == {5, 40} for by in errors.values())
    # recompute "other" at t = 40 by hand: the noise is the second draw of the seeded generator
    noise = torch.randn((2, *latents.shape), generator=torch.Generator().manual_seed(1))[1]
    x_t = DiffusionScheduler(50).add_noise(latents, noise, 40)
    with torch.no_grad():
        eps = s.denoiser([CAPTIONS[1], CAPTIONS[2], CAPTIONS[0]])(x_t, 40)
    assert errors["other"][40] == pytest.approx(float(torch.mean((eps - noise) ** 2)), rel=1e-5)
    assert caption_use(s, latents, CAPTIONS, timesteps=(5, 40), seed=1) == errors  # fixed noise
    # with one caption for every image, another scene's caption is the same caption
    same = caption_use(s, latents, [CAPTIONS[0]] * 3, timesteps=(5,))
    assert same["caption"] == same["other"] and same["caption"] != same["none"]


@pytest.mark.parametrize("encoder", ["linear", "unet"])
def test_the_bypass_removes_the_transformer_and_is_undone_after(encoder):
    s = sampler(encoder)
    x = torch.randn(2, *LATENT)
    with torch.no_grad():
        normal = s.denoiser(CAPTIONS[:2])(x, 30)
        with transformer_output_zeroed(s.model):
            bypassed = s.denoiser(CAPTIONS[:2])(x, 30)
            other_prompts = s.denoiser([[], CAPTIONS[2]])(x, 30)
        after = s.denoiser(CAPTIONS[:2])(x, 30)
    torch.testing.assert_close(bypassed, other_prompts)  # the prompt cannot reach the prediction
    assert not torch.allclose(bypassed, normal)
    torch.testing.assert_close(after, normal)  # the hook is gone
    if encoder == "linear":  # nothing goes around the transformer: the prediction is the decoder's bias
        assert torch.allclose(bypassed, bypassed[:1].expand_as(bypassed)) and bypassed.std() < normal.std()


def test_bad_arguments_are_clear_errors():
    s = sampler()
    with pytest.raises(SamplingError, match="at least 2 images"):
        caption_use(s, torch.randn(1, *LATENT), CAPTIONS[:1])
    with pytest.raises(SamplingError, match="at least 2 images"):
        caption_use(s, torch.randn(3, *LATENT), CAPTIONS[:2])
    with pytest.raises(SamplingError, match="timestep 50 is outside"):
        caption_use(s, torch.randn(2, *LATENT), CAPTIONS[:2], timesteps=(10, 50))
    with pytest.raises(SamplingError, match="not a text token"):
        caption_use(s, torch.randn(2, *LATENT), [CAPTIONS[0], [0]], timesteps=(10,))


def test_mot_analyze_caption_use_writes_the_errors(transfusion_run, tmp_path, capsys):
    assert main(["analyze", "caption-use", str(transfusion_run), "--scenes", "3", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "caption_use.json").read_text())
    assert written["scenes"] >= 2 and set(written["errors"]) == set(CONDITIONS)
    assert all(len(by) == 5 for by in written["errors"].values())
    assert "| transfusion | caption |" in capsys.readouterr().out
    assert main(["analyze", "caption-use", str(transfusion_run), "--scenes", "1", "--out", str(tmp_path)]) == 2
    assert "caption-use needs 2 or more" in capsys.readouterr().err
