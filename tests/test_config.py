"""Typed configuration: YAML round trip, overrides, and errors that name the field."""

import pytest

from mot.config import SHARED, ConfigError, ModelConfig, MoEConfig, load_config, save_config


def test_default_is_mot_with_one_tower_per_modality():
    config = ModelConfig()
    assert config.tower_names == ["text", "image"]
    assert config.groups("ffn") == config.groups("attention") == config.groups("norms") == ["text", "image"]
    assert config.norm_placement == "post"


def test_dense_leave_one_out_and_ablations_are_configurations():
    dense = ModelConfig(towers={"text": SHARED, "image": SHARED})
    assert dense.tower_names == [SHARED] and dense.groups("ffn") == [SHARED]
    loo = ModelConfig(modalities=["text", "image", "speech"], towers={"text": "ts", "speech": "ts", "image": "image"})
    assert loo.tower_names == ["ts", "image"] and loo.modality_tower_index == [0, 1, 0]
    ablation = ModelConfig(untied=["ffn"])
    assert ablation.groups("ffn") == ["text", "image"]
    assert ablation.groups("attention") == ablation.groups("norms") == [SHARED]


def test_derived_sizes():
    config = ModelConfig(d_model=4096, n_heads=32)
    assert config.ffn_dim == 11008 and config.head_dim == 128 and config.kv_heads == 32
    assert ModelConfig(ffn_hidden=100).ffn_dim == 100


def test_yaml_round_trip(tmp_path):
    config = ModelConfig(modalities=["text", "image", "speech"], towers={"text": "a", "image": "b", "speech": "a"},
                         untied=["ffn", "attention"], moe=MoEConfig(towers=["a"], routing="token_choice"),
                         n_kv_heads=2, ffn_hidden=300)
    save_config(config, tmp_path / "model.yaml")
    assert load_config(ModelConfig, tmp_path / "model.yaml") == config


def test_overrides_apply_after_the_file(tmp_path):
    (tmp_path / "m.yaml").write_text("d_model: 512\nn_heads: 8\n")
    config = load_config(ModelConfig, tmp_path / "m.yaml", ["n_layers=3", "moe.num_experts=8",
                                                           "towers={text: shared, image: shared}"])
    assert (config.d_model, config.n_layers, config.moe.num_experts) == (512, 3, 8)
    assert config.tower_names == [SHARED]


@pytest.mark.parametrize("overrides,message", [
    (["dmodel=3"], "Key 'dmodel' not in 'ModelConfig'"),
    (["moe.experts=3"], "Key 'experts' not in 'MoEConfig'"),
    (["d_model=wide"], "full_key: d_model"),
    (["d_model=100", "n_heads=8"], "d_model=100: must be divisible by n_heads=8"),
    (["n_kv_heads=3"], "n_kv_heads=3: must divide n_heads=8"),
    (["n_heads=32", "d_model=96"], "rotary embeddings need an even head_dim"),
    (["towers={text: a}"], "modality 'image' has no tower"),
    (["towers={text: a, image: b, video: c}"], "towers.video='c': 'video' is not in modalities"),
    (["untied=[ffn, mlp]"], "untied='mlp': must be one of"),
    (["norm_placement=sandwich"], "norm_placement='sandwich'"),
    (["moe.towers=[text]", "towers={text: shared, image: shared}"], "'text' is not an FFN group"),
    (["moe.routing=top2"], "moe.routing='top2'"),
    (["moe.capacity_factor=0"], "moe.capacity_factor=0"),
    (["vocab_size=0"], "vocab_size=0: must be a positive number"),
    (["modalities=[text, text]"], "names a modality twice"),
    (["d_model"], "is not of the form key=value"),
])
def test_invalid_configs_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(ModelConfig, overrides=overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(ModelConfig, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(ModelConfig, tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("d_model: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(ModelConfig, tmp_path / "broken.yaml")
    (tmp_path / "unknown.yaml").write_text("d_model: 64\nwidth: 3\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: Key 'width' not in 'ModelConfig'"):
        load_config(ModelConfig, tmp_path / "unknown.yaml")


def test_a_tower_map_given_anew_replaces_the_old_one(tmp_path):
    base = ModelConfig(modalities=["text", "image", "speech"], towers={"text": "a", "image": "b", "speech": "a"})
    three = load_config(ModelConfig, overrides=["towers={text: x, image: y, speech: z}"], base=base)
    assert three.tower_of_modality == {"text": "x", "image": "y", "speech": "z"}
    default = load_config(ModelConfig, overrides=["towers={}"], base=base)
    assert default.tower_names == ["text", "image", "speech"]
    (tmp_path / "two.yaml").write_text("modalities: [text, image]\ntowers: {text: shared, image: shared}\n")
    assert load_config(ModelConfig, tmp_path / "two.yaml", base=base).tower_names == [SHARED]


@pytest.mark.parametrize("latent, message", [
    (dict(modality="text"), "latent.modality='text': must be one of the non-text modalities"),
    (dict(modality="video"), "latent.modality='video'"),
    (dict(modality="image", patch_size=3), "latent.patch_size=3: must be a power of 2"),
    (dict(modality="image", patch_size=4), r"latent.unet_channels=\[64, 128\]: needs 3 widths"),
    (dict(modality="image", encoder="conv"), "latent.encoder='conv'"),
    (dict(modality="image", channels=0), "latent.channels=0"),
    (dict(modality="image", timestep_features=7), "latent.timestep_features=7: must be even"),
])
def test_bad_latent_settings_name_the_field(latent, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(latent=latent)


def test_latent_settings_load_from_overrides():
    config = load_config(ModelConfig, overrides=["latent.modality=image", "latent.encoder=linear",
                                                 "latent.unet_channels=[8,16]"])
    assert (config.latent.enabled, config.latent.encoder, config.latent.unet_channels) == (True, "linear", [8, 16])
    assert not ModelConfig().latent.enabled


def test_a_tower_map_over_a_recipes_preset_replaces_the_presets_map_whole():
    """A nested tower map (``model.towers`` of a recipe) is replaced, not merged key by key: the
    preset's ``speech`` entry must not survive a map that names only text and image."""
    from mot.runs.recipe import load_recipe

    config = load_recipe(None, ["preset=chameleon-speech-443m-loo-text", "model.towers={text: t, image: t, speech: s}"])
    assert config.model.towers == {"text": "t", "image": "t", "speech": "s"}
    with pytest.raises(ConfigError, match="towers"):
        load_recipe(None, ["preset=chameleon-speech-443m-loo-text", "model.towers={text: t, image: t}"])
