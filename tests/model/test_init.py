"""Initialisation: each module draws its own weights, in the order of draws mot has always used, so
that a seed gives the same model as before; ``MoTModel.reset_parameters`` is what construction runs."""

import copy
import math

import pytest
import torch
from torch import nn

from mot.model import MoTModel, build_model
from mot.model.layers import SwiGLU
from mot.model.moe import ExpertsFFN

from tests.helpers import tiny_config

LATENT = dict(modality="image", channels=4, patch_size=2, encoder="unet", unet_channels=[8, 16])


def one_walk_init(model: MoTModel) -> None:
    """mot's initialisation before each module drew its own weights, one walk over every module:
    the order of draws that keeps the weights of a seed."""
    std = model.config.init_std
    residual_std = std / math.sqrt(2 * model.config.n_layers)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, ExpertsFFN):
            nn.init.normal_(module.w_gate, std=std)
            nn.init.normal_(module.w_up, std=std)
            nn.init.normal_(module.w_down, std=residual_std)
        elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
            module.reset_parameters()
    for block in model.blocks:
        for out in block.attention.out.towers.values():
            nn.init.normal_(out.weight, std=residual_std)
        for ffn in block.ffn.towers.values():
            if isinstance(ffn, SwiGLU):
                nn.init.normal_(ffn.down.weight, std=residual_std)


@pytest.mark.parametrize("overrides", [
    dict(moe={"towers": ["text"], "routing": "expert_choice"}),
    dict(towers={"text": "shared", "image": "shared"}, moe={"towers": ["shared"], "routing": "token_choice"}),
    dict(modalities=["text", "image", "speech"], norm_placement="pre", norm_type="layernorm", qk_norm=False,
         untied=["ffn"]),
    dict(latent=LATENT),
    dict(latent={**LATENT, "encoder": "linear"}),
])
def test_reset_parameters_draws_every_weight_in_the_one_walk_order(overrides, monkeypatch):
    config = tiny_config(**overrides)
    torch.manual_seed(0)
    built = build_model(config).state_dict()

    torch.manual_seed(0)
    with monkeypatch.context() as patch:  # PyTorch's default initialisation only
        patch.setattr(MoTModel, "reset_parameters", lambda self: None)
        model = build_model(config)
    after_defaults = torch.get_rng_state()
    walked = copy.deepcopy(model)
    with torch.no_grad():  # every weight that reset_parameters owns, spoilt
        for name, parameter in model.named_parameters():
            if not name.startswith("latent_path.") or (name.endswith("weight") and parameter.dim() == 2):
                parameter.fill_(math.nan)
    model.reset_parameters()
    torch.set_rng_state(after_defaults)
    one_walk_init(walked)

    walked = walked.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, walked[name]), name
        assert torch.equal(tensor, built[name]), name


def test_output_projections_are_scaled_by_depth():
    config = tiny_config(n_layers=8, d_model=64, ffn_hidden=256, init_std=0.02)
    model = build_model(config)
    residual_std = 0.02 / math.sqrt(2 * 8)
    block = model.blocks[0]
    for weight, std in [(block.attention.out.towers["text"].weight, residual_std),
                        (block.ffn.towers["image"].down.weight, residual_std),
                        (block.ffn.towers["image"].up.weight, 0.02), (model.head.weight, 0.02)]:
        assert weight.std().item() == pytest.approx(std, rel=0.1)
