"""Analytic parameter and FLOP accounting against built models (meta device) and a FLOP counter."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from mot.config import COMPONENTS, SHARED, ModelConfig, MoEConfig
from mot.model import build_model
from mot.model.accounting import (AccountingError, count_model_parameters, count_parameters, flops_per_token,
                                  format_number, paper_moe_added_params_per_layer,
                                  paper_mot_added_params_per_layer, verify_parameter_counts)
from tests.helpers import tiny_config

THREE = ["text", "image", "speech"]
DENSE2 = {"text": SHARED, "image": SHARED}

CONFIGS = {
    "dense": dict(towers=DENSE2),
    "mot2": dict(),
    "mot3": dict(modalities=THREE),
    "dense3": dict(modalities=THREE, towers={m: SHARED for m in THREE}),
    "loo-image": dict(modalities=THREE, towers={"text": "ts", "speech": "ts", "image": "image"}),
    "loo-text": dict(modalities=THREE, towers={"text": "text", "image": "is", "speech": "is"}),
    "untied-ffn": dict(untied=["ffn"]),
    "untied-ffn-attention": dict(untied=["ffn", "attention"]),
    "untied-norms-only": dict(untied=["norms"]),
    "untied-none": dict(untied=[]),
    "moe-expert-choice": dict(towers=DENSE2, moe=MoEConfig(towers=[SHARED])),
    "moe-token-choice": dict(towers=DENSE2, moe=MoEConfig(num_experts=3, routing="token_choice", towers=[SHARED])),
    "mot-text-moe": dict(moe=MoEConfig(towers=["text"])),
    "mot-text-moe-untied-ffn": dict(untied=["ffn"], moe=MoEConfig(towers=["image"], capacity_factor=2.0)),
    "tied-ffn-moe": dict(untied=["attention", "norms"], moe=MoEConfig(towers=[SHARED])),
    "layernorm": dict(norm_type="layernorm"),
    "layernorm-pre": dict(norm_type="layernorm", norm_placement="pre", modalities=THREE),
    "gqa": dict(n_kv_heads=2),
    "mqa-dense": dict(n_kv_heads=1, towers=DENSE2),
    "no-qk-norm": dict(qk_norm=False),
    "ffn-hidden": dict(ffn_hidden=48),
    "one-modality": dict(modalities=["text"]),
    "untied-head": dict(modalities=THREE, untied=["ffn", "attention", "norms", "head"]),
    "dense-untied-head": dict(towers=DENSE2, untied=["ffn", "attention", "norms", "head"]),
}


def meta_numel(config: ModelConfig) -> int:
    return sum(p.numel() for p in build_model(config, device="meta").parameters())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_analytic_count_equals_built_model(name):
    config = tiny_config(**CONFIGS[name])
    counts = count_parameters(config)
    model = build_model(config, device="meta")
    measured = count_model_parameters(model)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.total == measured.total == counts.embedding + counts.non_embedding
    heads = len(config.tower_names) if "head" in config.untied else 1  # one output head per tower when untied
    assert counts.embedding == measured.embedding == (1 + heads) * config.vocab_size * config.d_model
    assert counts.non_embedding_per_group == measured.non_embedding_per_group
    assert verify_parameter_counts(config, model) == counts


@st.composite
def configs(draw) -> ModelConfig:
    modalities = THREE[:draw(st.integers(1, 3))]
    heads = draw(st.sampled_from([1, 2, 4]))
    kv_heads = draw(st.sampled_from([h for h in (1, 2, 4) if heads % h == 0]))
    tower_ids = draw(st.lists(st.integers(0, 2), min_size=len(modalities), max_size=len(modalities)))
    towers = {m: f"t{i}" for m, i in zip(modalities, tower_ids)}
    if len(set(tower_ids)) == 1 and draw(st.booleans()):
        towers = {m: SHARED for m in modalities}
    untied = draw(st.lists(st.sampled_from(COMPONENTS), unique=True))
    probe = ModelConfig(modalities=modalities, towers=towers, untied=untied)
    moe_towers = draw(st.lists(st.sampled_from(probe.groups("ffn")), unique=True))
    moe = MoEConfig(num_experts=draw(st.integers(1, 4)),
                    routing=draw(st.sampled_from(["expert_choice", "token_choice"])),
                    capacity_factor=draw(st.sampled_from([0.5, 1.0, 2.0, 8.0])), towers=moe_towers)
    return ModelConfig(vocab_size=draw(st.integers(1, 50)), d_model=heads * draw(st.sampled_from([2, 4, 6])),
                       n_layers=draw(st.integers(1, 3)), n_heads=heads, n_kv_heads=kv_heads,
                       ffn_hidden=draw(st.one_of(st.none(), st.integers(1, 40))),
                       norm_type=draw(st.sampled_from(["rmsnorm", "layernorm"])), qk_norm=draw(st.booleans()),
                       modalities=modalities, towers=towers, untied=untied, moe=moe)


@settings(max_examples=40, deadline=None)  # each example builds a meta model (a few ms)
@given(configs())
def test_analytic_count_equals_built_model_for_random_configs(config):
    counts = verify_parameter_counts(config)  # raises on any disagreement, group by group
    assert counts.total == meta_numel(config)
    assert counts.active <= counts.total
    assert set(counts.active_per_tower) == set(config.tower_names)


def test_verify_reports_a_disagreeing_model():
    with pytest.raises(AccountingError, match="non_embedding_per_group"):
        verify_parameter_counts(tiny_config(), build_model(tiny_config(untied=["ffn"]), device="meta"))


def test_per_group_names_follow_towers_and_shared():
    loo_image = {"text": "ts", "speech": "ts", "image": "image"}
    counts = count_parameters(tiny_config(modalities=THREE, towers=loo_image, untied=["ffn"]))
    assert list(counts.non_embedding_per_group) == ["ts", "image", SHARED]
    assert list(count_parameters(tiny_config(towers=DENSE2)).non_embedding_per_group) == [SHARED]


# ------------------------------------------------------------------------------ active --

def test_active_parameters_of_dense_and_mot_are_the_dense_total():
    dense = count_parameters(tiny_config(towers=DENSE2))
    mot = count_parameters(tiny_config(modalities=["text", "image"]))
    assert dense.active == dense.total
    assert mot.active == dense.total  # MoT: same parameters per token, one tower's worth
    assert mot.non_embedding == 2 * dense.non_embedding
    assert mot.active_non_embedding == dense.non_embedding


@pytest.mark.parametrize("routing, capacity, experts_used", [
    ("expert_choice", 1.0, 1), ("expert_choice", 2.0, 2), ("expert_choice", 9.0, 4), ("token_choice", 3.0, 1)])
def test_active_parameters_of_moe(routing, capacity, experts_used):
    config = tiny_config(towers=DENSE2, moe=MoEConfig(num_experts=4, routing=routing, capacity_factor=capacity,
                                                towers=[SHARED]))
    dense = count_parameters(tiny_config(towers=DENSE2))
    swiglu, router = 3 * config.d_model * config.ffn_dim, config.d_model * 4
    expected = dense.total + config.n_layers * (router + (experts_used - 1) * swiglu)
    assert count_parameters(config).active == expected
    assert count_parameters(config).total == dense.total + config.n_layers * (router + 3 * swiglu)


def test_hybrid_reports_the_text_tower_as_the_most_active():
    config = tiny_config(moe=MoEConfig(num_experts=4, towers=["text"]))
    counts = count_parameters(config)
    router = config.n_layers * config.d_model * 4  # with capacity 1, the text tower adds only its router
    assert counts.active_per_tower["text"] - counts.active_per_tower["image"] == router
    assert counts.active == counts.active_per_tower["text"]


# ------------------------------------------------------------------------------- FLOPs --

def _measured_flops(config: ModelConfig, modality_ids: torch.Tensor, backward: bool = False) -> float:
    """FLOPs per token that torch's FlopCounterMode sees in one forward (and backward) pass."""
    torch.manual_seed(0)
    model = build_model(config)
    tokens = torch.randint(0, config.vocab_size, modality_ids.shape)
    with FlopCounterMode(display=False) as counter:
        logits = model(tokens, modality_ids).logits
        if backward:
            logits.sum().backward()
    return counter.get_total_flops() / modality_ids.numel()


@pytest.mark.parametrize("name", ["dense", "mot3", "gqa", "moe-expert-choice", "untied-ffn"])
def test_forward_flops_equal_a_flop_counter(name):
    # The reference backend runs attention as plain matmuls over the full square, which is what
    # the count assumes; SDPA's fused CPU kernel is invisible to FlopCounterMode.
    config = tiny_config(**CONFIGS[name], attention_backend="reference")
    modality_ids = torch.arange(2 * 16).remainder(len(config.modalities)).view(2, 16)
    assert _measured_flops(config, modality_ids) == flops_per_token(config, 16).forward


def test_training_flops_equal_a_flop_counter():
    config = tiny_config(modalities=THREE, attention_backend="reference")
    modality_ids = torch.arange(2 * 16).remainder(3).view(2, 16)
    assert _measured_flops(config, modality_ids, backward=True) == flops_per_token(config, 16).training


def test_flops_follow_the_6n_plus_12lds_convention():
    config = tiny_config(towers=DENSE2, qk_norm=False)
    counts, length = count_parameters(config), 64
    norms = config.n_layers * 2 * config.d_model + config.d_model
    matmul_weights = counts.non_embedding - norms + config.d_model * config.vocab_size  # + the head
    flops = flops_per_token(config, length)
    assert flops.training == 3 * flops.forward
    assert flops.training == 6 * matmul_weights + 12 * config.n_layers * config.d_model * length
    assert flops.attention_forward == 4 * config.n_layers * config.d_model * length


def test_mot_costs_the_dense_flops_and_moe_adds_only_the_router():
    config = tiny_config(towers=DENSE2)
    dense = flops_per_token(config, 32)
    assert flops_per_token(tiny_config(modalities=THREE), 32).forward == dense.forward
    moe = flops_per_token(tiny_config(towers=DENSE2, moe=MoEConfig(num_experts=4, towers=[SHARED])), 32)
    assert moe.forward - dense.forward == 2 * config.n_layers * config.d_model * 4


def test_hybrid_flops_per_tower():
    flops = flops_per_token(tiny_config(moe=MoEConfig(towers=["text"])), 32)
    assert flops.forward_per_tower["image"] == flops_per_token(tiny_config(), 32).forward  # plain MoT
    assert flops.forward_per_tower["text"] > flops.forward_per_tower["image"]
    assert flops.forward == flops.forward_per_tower["text"]


def test_flops_reject_a_non_positive_context():
    with pytest.raises(ValueError, match="context_length"):
        flops_per_token(tiny_config(), 0)


# ------------------------------------------------------------------ the paper's section 6.1 --

def _matmul_params_per_layer(config: ModelConfig) -> float:
    """Measured block parameters, norm weights excluded (as the paper ignores them), per layer."""
    model = build_model(config, device="meta")
    block = sum(p.numel() for name, p in model.named_parameters()
                if name.startswith("blocks.") and "norm" not in name)
    return block / config.n_layers


@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("modalities", [["text", "image"], THREE])
def test_paper_mot_added_parameters(d, modalities):
    base = dict(d_model=d, ffn_hidden=d, qk_norm=False, modalities=modalities)
    dense = _matmul_params_per_layer(tiny_config(**base, towers={m: SHARED for m in modalities}))
    mot = _matmul_params_per_layer(tiny_config(**base))
    assert mot - dense == paper_mot_added_params_per_layer(d, len(modalities))


@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("experts", [2, 4, 8])
def test_paper_moe_added_parameters(d, experts):
    base = dict(d_model=d, ffn_hidden=d, qk_norm=False, towers=DENSE2)
    dense = _matmul_params_per_layer(tiny_config(**base))
    moe = _matmul_params_per_layer(tiny_config(**base, moe=MoEConfig(num_experts=experts, towers=[SHARED])))
    assert moe - dense == paper_moe_added_params_per_layer(d, experts)


def test_paper_formulas_values():
    assert paper_mot_added_params_per_layer(4096, 2) == 7 * 4096**2
    assert paper_moe_added_params_per_layer(4096, 4) == 9 * 4096**2 + 4 * 4096


def test_format_number():
    assert format_number(7_013_150_720) == "7.01B"
    assert format_number(442_600_000) == "442.6M"
    assert format_number(78_300) == "78.3K"
    assert format_number(12) == "12"


@pytest.mark.parametrize("latent", [dict(modality="image", encoder="linear"),
                                    dict(modality="image", encoder="unet", unet_channels=[8, 16]),
                                    dict(modality="image", encoder="unet", unet_channels=[8, 16], unet_skips=False),
                                    dict(modality="image", encoder="unet", patch_size=4, unet_channels=[8, 16, 24],
                                         unet_res_blocks=2, channels=3)])
def test_the_latent_path_is_counted_apart_and_exactly(latent):
    config = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, latent=latent)
    counts = verify_parameter_counts(config)  # raises if any count disagrees with the built model
    plain = count_parameters(ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4))
    assert counts.latent_path > 0
    assert counts.total == plain.total + counts.latent_path
    assert (counts.active, counts.non_embedding) == (plain.active, plain.non_embedding)
