"""The continuous (Transfusion) image path: patch encoders, the mask around images, the KV cache
used by sampling, and the errors for bad latent inputs."""

import pytest
import torch

from mot.config import ModelConfig
from mot.model.inputs import InputError
from mot.model.kv_cache import KVCache
from mot.model.latent_patches import patchify, unpatchify
from mot.model.transformer import build_model

PATCHES = 4  # a 4x4 latent in 2x2 patches
IMAGE_START = 5  # <bos> t t t <boi> | P P P P | <eoi> t t t ...


def config(**overrides):
    base = dict(vocab_size=50, d_model=32, n_layers=2, n_heads=4, max_seq_len=64,
                latent=dict(modality="image", channels=4, patch_size=2, encoder="linear"))
    base.update(overrides)
    return ModelConfig(**base)


def image_batch(length=14, rows=2, seed=0):
    """Rows with one image each at ``IMAGE_START`` (row 1's one position later), text around it."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 50, (rows, length), generator=generator)
    modalities = torch.zeros(rows, length, dtype=torch.long)
    spans = torch.zeros(rows, length, dtype=torch.long)
    starts = []
    for row in range(rows):
        start = IMAGE_START + row
        modalities[row, start - 1:start + PATCHES] = 1  # <boi> and the patches are image positions
        spans[row, start:start + PATCHES] = 1
        starts.append((row, start))
    latents = torch.randn(rows, 4, 4, 4, generator=generator)
    return dict(tokens=tokens, modality_ids=modalities, span_ids=spans, latents=latents,
                latent_starts=torch.tensor(starts), timesteps=torch.tensor([10, 700][:rows]))


def perturb_patch(latents, row, patch):
    """A copy of ``latents`` with one 2x2 patch (row-major index) of image ``row`` changed."""
    changed = latents.clone()
    y, x = divmod(patch, 2)
    changed[row, :, 2 * y:2 * y + 2, 2 * x:2 * x + 2] += 1.0
    return changed


def test_patchify_round_trip_and_order():
    latents = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    patches = patchify(latents, 2)
    assert patches.shape == (2, 6, 12)
    assert torch.equal(patches[0, 1], latents[0, :, 0:2, 2:4].reshape(-1))  # row-major: second patch of row 0
    assert torch.equal(unpatchify(patches, 2, 3, 4, 6), latents)


@pytest.mark.parametrize("backend", ["reference", "sdpa", "flex"])
def test_text_after_an_image_sees_every_patch_and_patches_see_their_own_image_only(backend):
    torch.manual_seed(0)
    model = build_model(config(attention_backend=backend)).eval()
    batch = image_batch()
    start, eoi = IMAGE_START, IMAGE_START + PATCHES
    with torch.no_grad():
        base = model(**batch).hidden
        for patch in range(PATCHES):
            changed = model(**{**batch, "latents": perturb_patch(batch["latents"], 0, patch)}).hidden
            moved = (changed[0] - base[0]).abs().amax(dim=-1) > 1e-6  # [L]
            assert not moved[:start].any(), "a position before the image saw it"
            assert moved[start:start + PATCHES].all(), f"patch {patch} is not seen by every patch of its image"
            assert moved[eoi:].all(), "text after the image does not see every patch"
            assert torch.equal(changed[1], base[1])  # the other row's image is another image
        # a later text token changes no patch of the image before it
        later = batch["tokens"].clone()
        later[0, eoi + 2] = (later[0, eoi + 2] + 1) % 50
        changed = model(**{**batch, "tokens": later}).hidden
        assert torch.equal(changed[0, :eoi + 2], base[0, :eoi + 2])


def test_backends_agree_with_the_reference_on_images():
    batch = image_batch(seed=3)
    outputs = {}
    for backend in ("reference", "sdpa", "flex"):
        torch.manual_seed(0)
        model = build_model(config(attention_backend=backend)).eval()
        with torch.no_grad():
            outputs[backend] = model(**batch)
    for backend in ("sdpa", "flex"):
        torch.testing.assert_close(outputs[backend].logits, outputs["reference"].logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(outputs[backend].latent_prediction, outputs["reference"].latent_prediction,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoder", ["linear", "unet"])
def test_noise_prediction_has_the_latents_shape_and_every_part_learns(encoder):
    torch.manual_seed(0)
    model = build_model(config(latent=dict(modality="image", encoder=encoder, unet_channels=[8, 16])))
    batch = image_batch()
    output = model(**batch)
    assert output.latent_prediction.shape == batch["latents"].shape
    (output.latent_prediction.square().mean() + output.logits.square().mean()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("encoder", ["linear", "unet"])
def test_a_batch_without_images_runs_the_patch_path_on_none_and_gives_zero_gradients(encoder):
    model = build_model(config(latent=dict(modality="image", channels=4, patch_size=2, encoder=encoder,
                                           unet_channels=[8, 16])))
    batch = image_batch()
    output = model(batch["tokens"], torch.zeros_like(batch["tokens"]), latents=torch.zeros(0, 4, 4, 4),
                   latent_starts=torch.zeros(0, 2, dtype=torch.long), timesteps=torch.zeros(0, dtype=torch.long))
    assert tuple(output.latent_prediction.shape) == (0, 4, 4, 4)
    (output.logits.sum() + output.latent_prediction.sum()).backward()
    for name, parameter in model.latent_path.named_parameters():
        assert parameter.grad is not None and not parameter.grad.any(), name  # zeros, not None


def test_without_skips_the_decoder_knows_only_what_passed_through_the_transformer():
    torch.manual_seed(0)
    model = build_model(config(latent=dict(modality="image", channels=4, patch_size=2, encoder="unet",
                                           unet_channels=[8, 16], unet_skips=False))).eval()
    unet = model.latent_path.patches
    batch = image_batch()
    with torch.no_grad():
        prediction = model(**batch).latent_prediction
        hidden = model(**batch).hidden
        patches = hidden.reshape(-1, hidden.shape[-1])[model._patch_rows(batch["latent_starts"], PATCHES, 14)]
        time = model.latent_path.timestep_embedding(batch["timesteps"])
        # the decoder from the final hidden states and the timestep alone, with no encoder state
        alone = unet.decode(patches.view(2, PATCHES, -1), ([None, None], (2, 2)), time)
    torch.testing.assert_close(prediction, alone)


def test_the_timestep_changes_the_prediction():
    torch.manual_seed(0)
    model = build_model(config()).eval()
    batch = image_batch()
    with torch.no_grad():
        early = model(**batch).latent_prediction
        late = model(**{**batch, "timesteps": torch.tensor([900, 700])}).latent_prediction
    assert not torch.allclose(early[0], late[0])
    assert torch.equal(early[1], late[1])  # the other image kept its timestep


def test_a_cached_prefix_gives_the_same_outputs_as_the_whole_sequence():
    torch.manual_seed(0)
    model = build_model(config()).eval()
    batch = image_batch(rows=1)
    split = IMAGE_START - 1  # the prefix ends before <boi>
    with torch.no_grad():
        whole = model(**batch)
        cache = KVCache(model.config.n_layers)
        prefix = {k: batch[k][:, :split] for k in ("tokens", "modality_ids", "span_ids")}
        first = model(**prefix, cache=cache)
        assert cache.length == split
        rest = {k: batch[k][:, split:] for k in ("tokens", "modality_ids", "span_ids")}
        starts = batch["latent_starts"] - torch.tensor([0, split])
        cache.freeze()
        for _ in range(2):  # a frozen cache serves every denoising step unchanged
            second = model(**rest, latents=batch["latents"], latent_starts=starts, timesteps=batch["timesteps"],
                           cache=cache)
            assert cache.length == split
            torch.testing.assert_close(second.logits, whole.logits[:, split:], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(second.latent_prediction, whole.latent_prediction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first.logits, whole.logits[:, :split], atol=1e-5, rtol=1e-5)


def test_token_by_token_decoding_with_a_cache_matches_the_whole_sequence():
    torch.manual_seed(0)
    model = build_model(config(latent={})).eval()
    tokens = torch.randint(0, 50, (2, 9))
    modalities = torch.zeros_like(tokens)
    with torch.no_grad():
        whole = model(tokens, modalities).logits
        cache = KVCache(model.config.n_layers)
        steps = [model(tokens[:, i:i + 1], modalities[:, i:i + 1], cache=cache).logits for i in range(9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=1e-5, rtol=1e-5)


def test_bad_latent_inputs_are_clear_errors():
    model = build_model(config())
    batch = image_batch()
    cases = [
        ({"latents": torch.randn(2, 3, 4, 4)}, r"latents must have shape \[images, 4, height, width\]"),
        ({"latents": torch.randn(2, 4, 5, 4)}, "do not split into 2x2 patches"),
        ({"timesteps": None}, "timesteps missing"),
        ({"timesteps": torch.tensor([1.0, 2.0])}, "timesteps must be integers"),
        ({"latent_starts": torch.tensor([[0, 5]])}, r"latent_starts must be integers of shape \[2, 2\]"),
        ({"latent_starts": torch.tensor([[0, 10], [1, 6]])}, "runs to the end of its row"),
        ({"latent_starts": torch.tensor([[0, 6], [1, 6]])}, "not all image tokens"),
        ({"latent_starts": torch.tensor([[0, 12], [1, 6]])}, "does not fit"),
    ]
    for change, message in cases:
        with pytest.raises(InputError, match=message):
            model(**{**batch, **change})
    # an image span whose end marker is missing: the position after the last patch is still an image token
    no_end = batch["modality_ids"].clone()
    no_end[0, IMAGE_START + PATCHES] = 1
    with pytest.raises(InputError, match="not followed by its end marker"):
        model(**{**batch, "modality_ids": no_end})
    plain = build_model(config(latent={}))
    with pytest.raises(InputError, match="no continuous path"):
        plain(**batch)


def test_save_and_load_keep_the_latent_path(tmp_path):
    torch.manual_seed(0)
    model = build_model(config(latent=dict(modality="image", encoder="unet", unet_channels=[8, 16]))).eval()
    model.save_pretrained(tmp_path / "model")
    loaded = type(model).from_pretrained(tmp_path / "model").eval()
    batch = image_batch()
    with torch.no_grad():
        assert torch.equal(model(**batch).latent_prediction, loaded(**batch).latent_prediction)
