"""Weight-decay groups, the learning-rate schedule, gradient clipping, config validation."""

import math

import pytest
import torch

from mot.config import ConfigError, load_config
from mot.model import build_model
from mot.runs.optim_config import OptimConfig
from mot.train.optim import build_optimizer, clip_gradients, learning_rate, parameter_groups

from tests.helpers import random_batch, tiny_config


def group_names(model, config):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: ({by_id[id(p)] for p in g["params"]}, g["weight_decay"])
            for g in parameter_groups(model, config)}


@pytest.mark.parametrize("norm_type", ["rmsnorm", "layernorm"])
def test_only_matrices_that_are_not_embeddings_are_decayed(norm_type):
    model = build_model(tiny_config(norm_type=norm_type, modalities=["text", "image", "speech"],
                                    moe={"towers": ["text"]}), device="meta")
    groups = group_names(model, OptimConfig(weight_decay=0.05))
    decay, decay_rate = groups["decay"]
    no_decay, no_decay_rate = groups["no_decay"]
    assert (decay_rate, no_decay_rate) == (0.05, 0.0)
    assert decay | no_decay == {n for n, _ in model.named_parameters()} and not decay & no_decay
    assert {"embed.weight", "head.weight"} <= no_decay
    assert "blocks.0.attention.qkv.towers.image.weight" in decay
    assert "blocks.1.ffn.towers.text.w_down" in decay  # 3-D expert weights are weights too
    assert "blocks.1.ffn.towers.image.down.weight" in decay
    assert all(n.endswith(("norm.towers.text.weight", "norm.towers.image.weight", "norm.towers.speech.weight",
                           ".bias")) for n in no_decay - {"embed.weight", "head.weight"})
    if norm_type == "layernorm":
        assert "final_norm.towers.speech.bias" in no_decay


def test_decay_embeddings_moves_embed_and_head_into_the_decayed_group():
    model = build_model(tiny_config(), device="meta")
    decay, _ = group_names(model, OptimConfig(decay_embeddings=True))["decay"]
    assert {"embed.weight", "head.weight"} <= decay


def test_groups_are_the_same_through_torch_compile():
    model = build_model(tiny_config(), device="meta")
    compiled = torch.compile(model)  # lazy: only wraps, names get an _orig_mod. prefix
    assert any(n.startswith("_orig_mod.") for n, _ in compiled.named_parameters())
    plain = [[id(p) for p in g["params"]] for g in parameter_groups(model, OptimConfig())]
    wrapped = [[id(p) for p in g["params"]] for g in parameter_groups(compiled, OptimConfig())]
    assert plain == wrapped


def test_frozen_parameters_and_empty_groups_are_left_out():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False))
    model[1].weight.requires_grad_(False)
    groups = parameter_groups(model, OptimConfig())
    assert [g["name"] for g in groups] == ["decay"] and groups[0]["params"] == [model[0].weight]


def test_build_optimizer_is_adamw_with_the_config_and_the_step_zero_rate():
    config = OptimConfig(lr=1e-3, betas=(0.8, 0.9), eps=1e-6, warmup_steps=10)
    optimizer = build_optimizer(build_model(tiny_config()), config)
    assert isinstance(optimizer, torch.optim.AdamW)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-4) and group["betas"] == (0.8, 0.9) and group["eps"] == 1e-6


def test_schedule_warms_up_linearly_then_decays_to_the_floor():
    config = OptimConfig(lr=1.0, warmup_steps=10, total_steps=100, min_lr_ratio=0.1)
    rates = [learning_rate(s, config) for s in range(130)]
    assert rates[0] == pytest.approx(0.1)
    assert rates[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert rates[9] == rates[10] == 1.0
    assert all(a < b for a, b in zip(rates[:10], rates[1:10]))
    assert all(a > b for a, b in zip(rates[10:100], rates[11:101]))
    assert rates[55] == pytest.approx(0.55)  # half-way through the cosine: the mean of peak and floor
    assert rates[100] == pytest.approx(0.1) and set(rates[100:]) == {rates[100]}


def test_schedule_without_warmup_starts_at_the_peak():
    config = OptimConfig(lr=2.0, warmup_steps=0, total_steps=4, min_lr_ratio=0.0)
    assert [learning_rate(s, config) for s in range(6)] == pytest.approx([2.0, 1.7071068, 1.0, 0.2928932, 0.0, 0.0])


def test_negative_step_is_rejected():
    with pytest.raises(ValueError, match="step=-1"):
        learning_rate(-1, OptimConfig())


@pytest.mark.parametrize("field, value", [
    ("lr", 0.0), ("lr", -1e-3), ("lr", math.nan), ("eps", 0), ("betas", (0.9, 1.0)), ("betas", (0.9,)),
    ("weight_decay", -0.1), ("decay_embeddings", "yes"), ("warmup_steps", -1), ("warmup_steps", 2.5),
    ("total_steps", 0), ("min_lr_ratio", 1.5), ("grad_clip", 0.0), ("grad_clip", True),
])
def test_invalid_values_name_the_field_and_the_value(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}={value!r}".replace("(", r"\(").replace(")", r"\)")):
        OptimConfig(**{field: value})


def test_warmup_longer_than_the_run_is_rejected():
    with pytest.raises(ConfigError, match=r"warmup_steps=20: must not exceed total_steps=10"):
        OptimConfig(warmup_steps=20, total_steps=10)


def test_config_loads_from_overrides_with_betas_as_a_tuple():
    config = load_config(OptimConfig, overrides=["betas=[0.8,0.99]", "grad_clip=null", "total_steps=500"])
    assert config.betas == (0.8, 0.99) and config.grad_clip is None and config.total_steps == 500
    with pytest.raises(ConfigError, match="lr"):
        load_config(OptimConfig, overrides=["lr=-1"])


def backward_once(model, scale=1.0):
    tokens, modalities = random_batch(model.config, seed=3)
    (model(tokens, modalities).logits.square().mean() * scale).backward()


def test_clip_gradients_returns_the_norm_and_clips_to_max_norm():
    model = build_model(tiny_config())
    backward_once(model, scale=1e4)
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    norm = clip_gradients(model, max_norm=1.0)
    assert isinstance(norm, torch.Tensor) and norm.shape == ()
    torch.testing.assert_close(norm, expected)
    assert norm > 1.0
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    torch.testing.assert_close(after, torch.tensor(1.0), rtol=1e-4, atol=1e-4)


def test_clip_gradients_without_max_norm_only_measures():
    model = build_model(tiny_config())
    backward_once(model, scale=1e4)
    before = [p.grad.clone() for p in model.parameters()]
    norm = clip_gradients(model, None)
    assert norm > 1.0
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters()))


def test_clip_gradients_leaves_small_gradients_alone():
    model = build_model(tiny_config())
    backward_once(model, scale=1e-6)
    before = [p.grad.clone() for p in model.parameters()]
    clip_gradients(model, max_norm=1.0)
    assert all(torch.allclose(a, p.grad, rtol=1e-5, atol=0) for a, p in zip(before, model.parameters()))
