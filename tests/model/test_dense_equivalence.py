"""MoT whose towers all hold the same weights is exactly the dense model."""

import pytest
import torch

from mot.model import build_model

from tests.helpers import random_batch, tiny_config

THREE = ["text", "image", "speech"]


def copy_dense_into_towers(dense, mot) -> None:
    """Give every tower of ``mot`` the weights of ``dense``'s single tower."""
    dense_state = dense.state_dict()
    dense_tower = dense.config.tower_names[0]
    loaded = {}
    for name in mot.state_dict():
        parts = name.split(".")
        if "towers" in parts:
            parts[parts.index("towers") + 1] = dense_tower
        loaded[name] = dense_state[".".join(parts)]
    mot.load_state_dict(loaded)


@pytest.mark.parametrize("modalities,untied,placement", [
    (["text", "image"], ["ffn", "attention", "norms"], "post"),
    (THREE, ["ffn", "attention", "norms"], "post"),
    (THREE, ["ffn"], "pre"),
    (["text", "image"], ["ffn", "attention"], "pre"),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mot_with_identical_towers_equals_dense(modalities, untied, placement, seed):
    dense = build_model(tiny_config(modalities=modalities, towers={m: "shared" for m in modalities},
                                    norm_placement=placement))
    mot = build_model(tiny_config(modalities=modalities, untied=untied, norm_placement=placement))
    copy_dense_into_towers(dense, mot)
    tokens, mods = random_batch(mot.config, seed=seed, absent=(seed % len(modalities),) if seed else ())
    with torch.no_grad():
        assert torch.allclose(mot(tokens, mods).logits, dense(tokens, mods).logits, atol=1e-5, rtol=0)


def test_towers_are_really_different_after_init():
    mot = build_model(tiny_config())
    qkv = mot.blocks[0].attention.qkv.towers
    assert not torch.equal(qkv["text"].weight, qkv["image"].weight)
