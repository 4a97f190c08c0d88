"""Training in the Transfusion setting: LM + weight x per-image diffusion loss, keyed noise,
exact resume, validation on a fixed timestep grid, and the recipe checks."""

import pytest
import torch

from mot.config import ConfigError
from mot.data.packing import IGNORE
from mot.data.settings import open_corpus
from mot.model.transformer import ModelOutput
from mot.objectives.diffusion import diffusion_loss_per_image, draw_timesteps, generator_for
from mot.runs.metrics import read_metrics
from mot.runs.recipe import DiffusionConfig, load_recipe
from mot.runs.resolve import resolve_model
from mot.train.objective import TransfusionObjective
from mot.train.trainer import Trainer

from tests.helpers import small_transfusion_recipe


def quiet(_):
    pass


def losses(run_dir, kind="train"):
    return [(r["step"], r["loss"], r.get("loss_per_modality", r.get("loss"))) for r in read_metrics(run_dir)
            if r["kind"] == kind]


def a_batch(corpus):
    loader = open_corpus(corpus).loader("transfusion", "train", seq_len=96, batch_rows=2, modality_tower_index=[0, 1])
    return next(loader)


def test_the_loss_is_lm_plus_weight_times_the_mean_per_image_diffusion_loss(small_corpus):
    batch = a_batch(small_corpus)
    images = len(batch.latents)
    assert images >= 2
    objective = TransfusionObjective(["text", "image"], "image", DiffusionConfig(loss_weight=3.0), 0, 0)
    logits = torch.randn(*batch.tokens.shape, 306)
    noise = torch.randn_like(batch.latents)
    # image i's prediction is off by i+1 everywhere: its squared error is (i+1)^2 whatever its size
    offsets = torch.arange(1, images + 1, dtype=torch.float32)[:, None, None, None]
    output = ModelOutput(logits, logits, latent_prediction=noise + offsets)
    extra = type("Noised", (), {"target": noise})()
    loss = objective.loss(output, batch, extra)
    per_image = (offsets.flatten() ** 2)
    lm_positions = int((batch.targets != IGNORE).sum())
    assert loss.count_per_modality.tolist() == [lm_positions, images]
    torch.testing.assert_close(loss.sum_per_modality[1], per_image.sum())
    lm_mean = torch.nn.functional.cross_entropy(logits.reshape(-1, 306), batch.targets.reshape(-1))
    torch.testing.assert_close(loss.total, lm_mean + 3.0 * per_image.mean())
    # across ranks and micro-batches: LM sum / global positions + weight x diffusion sum / global images
    normalisers = objective.normalisers([batch, batch])
    assert normalisers.tolist() == [2 * lm_positions, 2 * images]
    backward = objective.to_backpropagate(loss, normalisers, world_size=1)
    torch.testing.assert_close(backward, (lm_mean + 3.0 * per_image.mean()) / 2)
    assert objective.total(loss.sum_per_modality, loss.count_per_modality) == pytest.approx(float(loss.total))


def test_diffusion_loss_is_averaged_per_image():
    prediction = torch.zeros(3, 4, 2, 2)
    noise = torch.zeros(3, 4, 2, 2)
    noise[0, 0, 0, 0] = 4.0  # one element of 16 off by 4 -> 16 / 16 = 1
    assert diffusion_loss_per_image(prediction, noise).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="differ in shape"):
        diffusion_loss_per_image(prediction, noise[:2])


def test_timesteps_come_from_keyed_generators_and_captioned_images_are_capped():
    first = draw_timesteps(1000, 1000, generator_for((0, 5, 0, 0)))
    assert torch.equal(first, draw_timesteps(1000, 1000, generator_for((0, 5, 0, 0))))
    assert not torch.equal(first, draw_timesteps(1000, 1000, generator_for((0, 6, 0, 0))))  # another step
    assert not torch.equal(first, draw_timesteps(1000, 1000, generator_for((0, 5, 1, 0))))  # another rank
    assert first.min() >= 0 and first.max() <= 999 and first.float().mean() == pytest.approx(500, abs=40)
    capped = torch.arange(1000) % 2 == 0
    timesteps = draw_timesteps(1000, 1000, generator_for((1,)), capped, cap_fraction=0.8, cap_timestep=500)
    low = (timesteps[capped] <= 500).float().mean()
    assert low == pytest.approx(0.8 + 0.2 * 0.5, abs=0.06)  # capped 80%, plus uniform draws that land low
    assert (timesteps[~capped] <= 500).float().mean() == pytest.approx(0.5, abs=0.06)
    every = draw_timesteps(100, 1000, generator_for((2,)), torch.ones(100, dtype=torch.bool), 1.0, 100)
    assert every.max() <= 100


def test_flow_noises_along_the_straight_line_and_targets_the_velocity(small_corpus):
    batch = a_batch(small_corpus)
    flow = TransfusionObjective(["text", "image"], "image", DiffusionConfig(objective="flow", train_steps=100), 0, 0)
    ddpm = TransfusionObjective(["text", "image"], "image", DiffusionConfig(train_steps=100), 0, 0)
    key = (0, 4, 0, 0)
    inputs, noised = flow.model_inputs(batch, key)
    _, noised_ddpm = ddpm.model_inputs(batch, key)
    noise = noised_ddpm.target  # the same keyed draws: DDPM's target is the noise itself
    assert torch.equal(noised.timesteps, noised_ddpm.timesteps)
    s = (noised.timesteps.double() + 1)[:, None, None, None] / 100
    torch.testing.assert_close(noised.noisy, ((1 - s) * batch.latents + s * noise).float())
    torch.testing.assert_close(noised.target, noise - batch.latents)
    assert inputs["latents"] is noised.noisy


@pytest.mark.parametrize("objective", ["ddpm", "flow"])
def test_a_resumed_transfusion_run_continues_bit_for_bit(small_corpus, tmp_path, objective):
    def recipe(directory, **overrides):
        return small_transfusion_recipe(small_corpus, directory, **{"diffusion.objective": objective}, **overrides)
    straight = Trainer(recipe(tmp_path / "a"), log=quiet)
    straight.train()
    first = Trainer(recipe(tmp_path / "b", steps=3), log=quiet)
    first.train()
    resumed = Trainer(recipe(tmp_path / "b"), log=quiet)
    assert resumed.step == 3
    resumed.train()
    run_a, run_b = tmp_path / "a" / "transfusion", tmp_path / "b" / "transfusion"
    assert losses(run_a) == losses(run_b)  # bitwise: the diffusion noise is keyed by step, not global state
    # (the first half also evaluated at its last step, 3)
    assert losses(run_a, "valid") == [v for v in losses(run_b, "valid") if v[0] != 3]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    train = losses(run_a)
    assert set(train[0][2]) == {"text", "image"} and all(v is not None for v in train[0][2].values())
    assert train[-1][1] < train[0][1]
    valid = [r for r in read_metrics(run_a) if r["kind"] == "valid"]
    assert set(valid[0]["loss"]) == {"valid", "heldout"} and valid[0]["loss"]["valid"]["image"] > 0


def test_validation_uses_the_same_noise_at_every_evaluation(small_corpus, tmp_path):
    trainer = Trainer(small_transfusion_recipe(small_corpus, tmp_path, steps=1), log=quiet)
    first, second = trainer.evaluate(), trainer.evaluate()
    assert first == second
    other = Trainer(small_transfusion_recipe(small_corpus, tmp_path, steps=1, name="grid",
                                             **{"diffusion.valid_timesteps": "[900]"}), log=quiet)
    assert other.evaluate()["valid"]["image"] != first["valid"]["image"]
    assert other.evaluate()["valid"]["text"] == pytest.approx(first["valid"]["text"])  # clean images for text


def test_recipes_check_the_diffusion_settings_and_the_latent_path():
    with pytest.raises(ConfigError, match="diffusion.caption_dropout=1.5"):
        load_recipe(None, ["diffusion.caption_dropout=1.5"])
    with pytest.raises(ConfigError, match="diffusion.noise_cap_timestep=1000"):
        load_recipe(None, ["diffusion.noise_cap_timestep=1000"])
    with pytest.raises(ConfigError, match="diffusion.valid_timesteps"):
        load_recipe(None, ["diffusion.valid_timesteps=[]"])
    with pytest.raises(ConfigError, match="diffusion.objective='score': must be one of ddpm, flow"):
        load_recipe(None, ["diffusion.objective=score"])
    with pytest.raises(ConfigError, match="transfusion setting, not chameleon"):
        resolve_model(load_recipe(None, ["model.latent.modality=image"]), 100, ["text", "image"])
    with pytest.raises(ConfigError, match="needs model.latent.modality=image"):
        resolve_model(load_recipe(None, ["data.setting=transfusion", "model_from_data=false"]))
    resolved = resolve_model(load_recipe(None, ["data.setting=transfusion"]), 100, ["text", "image"], 8)
    assert (resolved.model.latent.modality, resolved.model.latent.channels) == ("image", 8)
