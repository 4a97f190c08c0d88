"""The Transfusion sampler: a cached prompt gives what recomputing it gives, guidance, padding,
output shapes, captioning, and errors for bad arguments."""

import pytest
import torch

from mot.config import ModelConfig
from mot.generate.transfusion import ImageSampling, SamplingError, TransfusionSampler
from mot.model.transformer import build_model
from mot.tokenizers.vocab import VocabLayout

LAYOUT = VocabLayout({"text": 40, "image": 1})  # <pad> <bos> <eos> <boi> <eoi> | 40 text | 1 placeholder
TEXT = LAYOUT.id_range("text")[0]
LATENT = (4, 4, 4)  # 2x2 patches: 4 image positions


def sampler(backend="sdpa", towers=None, seed=0, objective="ddpm"):
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=LAYOUT.vocab_size, d_model=32, n_layers=2, n_heads=4, max_seq_len=64,
                         modalities=["text", "image"], attention_backend=backend,
                         latent=dict(modality="image", channels=4, patch_size=2, encoder="unet",
                                     unet_channels=[8, 16], timestep_features=16),
                         **({"towers": towers} if towers else {}))
    return TransfusionSampler(build_model(config).eval(), LAYOUT, LATENT, train_steps=50, objective=objective)


CAPTIONS = [[TEXT + 1, TEXT + 7, TEXT + 3], [TEXT + 5]]  # different lengths: left padded


@pytest.mark.parametrize("objective, method", [("ddpm", "ddpm"), ("ddpm", "ddim"), ("flow", "euler"),
                                               ("flow", "heun")])
@pytest.mark.parametrize("towers", [None, {"text": "shared", "image": "shared"}])
def test_the_cached_prompt_gives_what_recomputing_it_each_step_gives(objective, method, towers):
    s = sampler(towers=towers, objective=objective)
    sampling = ImageSampling(steps=6, method=method, cfg_scale=2.5, seed=3)
    cached = s.text_to_image(CAPTIONS, sampling)
    full = s.text_to_image(CAPTIONS, sampling, reuse_prompt=False)
    assert cached.shape == (2, *LATENT) and torch.isfinite(cached).all()
    # the first step divides by sqrt(abar) ~ 1e-2: a float rounding in eps grows a hundredfold
    torch.testing.assert_close(cached, full, atol=1e-2, rtol=1e-3)
    # the denoiser itself agrees tightly at every noise level
    x = torch.randn(4, *LATENT)
    cached_step, full_step = (s.denoiser(CAPTIONS + [[], []], reuse_prompt=reuse) for reuse in (True, False))
    with torch.no_grad():
        for timestep in (0, 25, 49):
            torch.testing.assert_close(cached_step(x, timestep), full_step(x, timestep), atol=1e-5, rtol=1e-5)


def test_a_prompt_does_not_depend_on_the_padding_its_batch_gives_it():
    s = sampler(backend="reference")
    boi = LAYOUT.special("<boi>")
    x = torch.randn(1, *LATENT)
    with torch.no_grad():
        alone = s._cached_denoiser(s._left_padded([[1, *CAPTIONS[1], boi]]))(x, 30)
        padded = s._cached_denoiser(s._left_padded([[1, *CAPTIONS[1], boi], [1, *CAPTIONS[0], boi]]))
        torch.testing.assert_close(padded(torch.cat([x, x]), 30)[:1], alone, atol=1e-5, rtol=1e-5)
        # the shorter prompt, left padded by two positions, still sees only itself
        padded = s._cached_denoiser(s._left_padded([[1, *CAPTIONS[0], boi], [1, *CAPTIONS[1], boi]]))
        torch.testing.assert_close(padded(torch.cat([x, x]), 30)[1:], alone, atol=1e-5, rtol=1e-5)


def test_clamping_x0_keeps_the_chain_in_the_latents_range():
    s = sampler()
    free = s.text_to_image(CAPTIONS, ImageSampling(steps=8, cfg_scale=1.0, clip_latents=None))
    clamped = s.text_to_image(CAPTIONS, ImageSampling(steps=8, cfg_scale=1.0, clip_latents=2.0))
    assert clamped.abs().max() <= 2.0 + 1e-5  # the last step returns the clamped x0_hat
    assert free.abs().max() > 2.0  # an untrained denoiser's x0_hat at the noisiest level is far outside


def test_guidance_moves_the_sample_and_the_prompt_matters():
    s = sampler()
    plain = s.text_to_image(CAPTIONS, ImageSampling(steps=4, cfg_scale=1.0))
    guided = s.text_to_image(CAPTIONS, ImageSampling(steps=4, cfg_scale=4.0))
    assert not torch.allclose(plain, guided)
    other = s.text_to_image([[TEXT + 30, TEXT + 31, TEXT + 32], CAPTIONS[1]], ImageSampling(steps=4, cfg_scale=1.0))
    assert not torch.allclose(other[0], plain[0])
    # the same seed gives the same image; another seed another
    assert torch.equal(s.text_to_image(CAPTIONS, ImageSampling(steps=4, seed=1)),
                       s.text_to_image(CAPTIONS, ImageSampling(steps=4, seed=1)))
    assert not torch.equal(s.text_to_image(CAPTIONS, ImageSampling(steps=4, seed=1)),
                           s.text_to_image(CAPTIONS, ImageSampling(steps=4, seed=2)))


def test_captions_are_text_ids_and_decoding_with_the_cache_matches_the_whole_sequence():
    s = sampler(backend="reference")
    latents = torch.randn(3, *LATENT)
    captions = s.image_to_text(latents, max_new_tokens=5)
    assert len(captions) == 3 and all(len(c) <= 5 for c in captions)
    start, stop = LAYOUT.id_range("text")
    assert all(start <= t < stop for c in captions for t in c)
    # greedy decoding = argmax of a forward over the whole sequence, token by token
    boi, eoi = LAYOUT.markers("image")
    row = captions[0]
    tokens = torch.tensor([[1, boi, *[LAYOUT.id_range("image")[0]] * 4, eoi, *row]])
    modality_ids = torch.zeros_like(tokens)
    modality_ids[0, 1:6] = 1
    span_ids = torch.zeros_like(tokens)
    span_ids[0, 2:6] = 1
    with torch.no_grad():
        logits = s.model(tokens, modality_ids, span_ids=span_ids, latents=latents[:1],
                         latent_starts=torch.tensor([[0, 2]]), timesteps=torch.tensor([0])).logits[0]
    allowed = torch.zeros(LAYOUT.vocab_size, dtype=torch.bool)
    allowed[start:stop] = True
    allowed[LAYOUT.special("<eos>")] = True
    predicted = logits[6:].masked_fill(~allowed, float("-inf")).argmax(-1).tolist()
    assert predicted[:len(row)] == row
    if len(row) < 5:
        assert predicted[len(row)] == LAYOUT.special("<eos>")
    sampled = s.image_to_text(latents, max_new_tokens=5, temperature=1.0, seed=0)
    assert sampled == s.image_to_text(latents, max_new_tokens=5, temperature=1.0, seed=0)


def test_bad_sampling_arguments_are_clear_errors():
    s = sampler()
    with pytest.raises(SamplingError, match="method='rk4'"):
        ImageSampling(method="rk4")
    with pytest.raises(SamplingError, match=r"method='euler'.*does not sample a ddpm model.*'ddpm', 'ddim'"):
        s.text_to_image(CAPTIONS, ImageSampling(steps=2, method="euler"))
    with pytest.raises(SamplingError, match="steps=0"):
        ImageSampling(steps=0)
    with pytest.raises(SamplingError, match="cfg_scale"):
        ImageSampling(cfg_scale=float("nan"))
    with pytest.raises(SamplingError, match="clip_latents=0"):
        ImageSampling(clip_latents=0)
    with pytest.raises(SamplingError, match="not a text token"):
        s.text_to_image([[LAYOUT.special("<boi>")]], ImageSampling(steps=2))
    with pytest.raises(SamplingError, match="at most"):
        s.text_to_image([[TEXT] * 80], ImageSampling(steps=2))
    with pytest.raises(SamplingError, match="captions is empty"):
        s.text_to_image([], ImageSampling(steps=2))
    with pytest.raises(SamplingError, match="steps=250: more than the 50"):
        s.text_to_image(CAPTIONS)
    with pytest.raises(SamplingError, match=r"latents must have shape \[images, 4, 4, 4\]"):
        s.image_to_text(torch.randn(2, 4, 8, 8))
    no_latent = build_model(ModelConfig(vocab_size=LAYOUT.vocab_size, d_model=32, n_layers=1, n_heads=4,
                                        modalities=["text", "image"]))
    with pytest.raises(SamplingError, match="no continuous image path"):
        TransfusionSampler(no_latent, LAYOUT, LATENT)
    with pytest.raises(SamplingError, match="latent_shape"):
        TransfusionSampler(s.model, LAYOUT, (8, 4, 4))


def test_captions_come_from_the_decoder_batched_as_one_by_one():
    from mot.generate.decoding import Decoder, Request
    from mot.generate.logits import GenerationError
    from mot.generate.modality_state import SpanRules

    s = sampler()
    latents = torch.randn(3, *LATENT)
    for temperature in (0.0, 1.0):
        together = s.image_to_text(latents, max_new_tokens=6, temperature=temperature, seed=5)
        alone = [s.image_to_text(latents[i:i + 1], max_new_tokens=6, temperature=temperature, seed=5 + i)[0]
                 for i in range(3)]
        assert together == alone
    # a text prompt before the image and a second image: left padding, two spans, two latents
    boi, eoi = LAYOUT.markers("image")
    image = [boi, *[LAYOUT.id_range("image")[0]] * 4, eoi]
    decoder = Decoder(s.model, LAYOUT, SpanRules(image_tokens=4))
    two = Request([1, TEXT + 2, *image, TEXT + 3, *image], mode="text", max_new_tokens=4, latents=latents[:2])
    one = Request([1, *image], mode="text", max_new_tokens=4, latents=latents[2:])
    assert decoder.generate([two, one]) == [decoder.generate([two])[0], decoder.generate([one])[0]]
    with pytest.raises(GenerationError, match=r"one image per <boi> of the prompt \(2\)"):
        decoder.generate([Request(two.prompt, mode="text", latents=latents[:1])])
    with pytest.raises(GenerationError, match="4 placeholders"):
        decoder.generate([Request([1, boi, LAYOUT.id_range("image")[0], eoi], mode="text", latents=latents[:1])])
