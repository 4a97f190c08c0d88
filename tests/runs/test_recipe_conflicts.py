"""A recipe's ``architecture`` sets the model's towers, untied components and MoE; a value of those
given in the file, the overrides or the preset that it would replace is an error, not a silent loss."""

from pathlib import Path

import pytest

from mot.cli import main
from mot.config import ConfigError
from mot.runs.recipe import load_recipe
from mot.runs.resolve import resolve_model

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs/recipes/tiny/chameleon.yaml"


def test_an_override_the_architecture_replaces_is_refused():
    message = r"model.moe.num_experts=8 is replaced by architecture=moe4x \(which sets moe.num_experts=4\); drop one"
    with pytest.raises(ConfigError, match=message):
        load_recipe(TINY, ["architecture=moe4x", "model.moe.num_experts=8"])
    with pytest.raises(ConfigError, match=message):
        load_recipe(None, ["model.moe.num_experts=8", "architecture=moe4x"])


def test_the_cli_names_both(capsys):
    assert main(["train", "--config", str(TINY), "architecture=moe4x", "model.moe.num_experts=8"]) == 2
    assert "model.moe.num_experts=8 is replaced by architecture=moe4x" in capsys.readouterr().err


@pytest.mark.parametrize("architecture, override, message", [
    ("mot", "model.moe.towers=[text]", r"model.moe.towers=\['text'\] is replaced by architecture=mot \(which sets "
                                       r"moe.towers=\[\]\)"),
    ("moe4x", "model.moe.routing=token_choice", r"model.moe.routing='token_choice' .* moe.routing='expert_choice'"),
    ("moe4x", "model.moe.capacity_factor=2.0", r"model.moe.capacity_factor=2.0 .* moe.capacity_factor=1.0"),
    ("ffn", "model.untied=[ffn,attention]", r"model.untied=\['attention', 'ffn'\] .* untied=\['ffn'\]"),
    ("dense", "model.towers={text: a, image: a}", r"model.towers=\{'text': 'a', 'image': 'a'\} is replaced by "
                                                  r"architecture=dense \(which sets towers=\{'text': 'shared'"),
    ("loo-speech", "model.moe.num_experts=2", r"model.moe.num_experts=2 is replaced by architecture=loo-speech"),
])
def test_each_field_an_architecture_sets_is_checked(architecture, override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(None, [f"architecture={architecture}", override])


def test_a_conflict_in_the_recipe_file_is_refused(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("architecture: moe4x\nmodel:\n  moe:\n    num_experts: 16\n")
    with pytest.raises(ConfigError, match=r"model.moe.num_experts=16 is replaced by architecture=moe4x"):
        load_recipe(recipe)
    recipe.write_text("architecture: mot\nmodel:\n  untied: [ffn]\n")
    with pytest.raises(ConfigError, match=r"model.untied=\['ffn'\] is replaced by architecture=mot"):
        load_recipe(recipe)


@pytest.mark.parametrize("architecture, overrides", [
    ("moe4x", ["model.moe.num_experts=4", "model.moe.capacity_factor=1.0"]),
    ("dense", ["model.towers={text: shared, image: shared}"]),
    ("mot-text-moe4x", ["model.moe.towers=[text]", "model.moe.routing=expert_choice"]),
    ("mot", ["model.untied=[norms,ffn,attention]"]),  # the same components in another order
    ("loo-image", ["model.modalities=[text,image,speech]",
                   "model.towers={text: text_speech, speech: text_speech, image: image}"]),
    ("moe4x", ["model.d_model=64", "model.n_layers=3"]),  # fields no architecture sets
])
def test_values_the_architecture_would_set_anyway_are_fine(architecture, overrides):
    config = load_recipe(None, [f"architecture={architecture}", *overrides])
    assert resolve_model(config).model.tower_names  # resolves as before


def test_a_preset_the_architecture_replaces_is_refused():
    with pytest.raises(ConfigError, match=r"architecture=mot replaces towers=\{'text': 'shared', 'image': 'shared'\} "
                                          r"of preset=tiny-dense with \{\}; drop one of them"):
        load_recipe(None, ["preset=tiny-dense", "architecture=mot"])
    with pytest.raises(ConfigError, match=r"architecture=dense replaces moe.towers=\['shared'\] of preset=tiny-moe4x"):
        load_recipe(None, ["preset=tiny-moe4x", "architecture=dense"])
    config = load_recipe(None, ["preset=tiny-moe4x", "architecture=moe4x"])  # the preset's own architecture
    assert resolve_model(config).model.moe.towers == ["shared"]


def test_overrides_on_a_preset_without_an_architecture_are_kept():
    config = resolve_model(load_recipe(None, ["preset=tiny-moe4x", "model.moe.num_experts=8", "model.n_layers=3"]))
    assert (config.model.moe.num_experts, config.model.n_layers, config.model.moe.towers) == (8, 3, ["shared"])


def test_the_tiny_recipes_and_their_architectures_still_load():
    for name in ("chameleon", "chameleon-speech", "transfusion"):
        for architecture in ("dense", "mot", "moe4x", "mot-text-moe4x"):
            load_recipe(ROOT / f"configs/recipes/tiny/{name}.yaml", [f"architecture={architecture}"])
    load_recipe(ROOT / "configs/recipes/tiny/chameleon-speech.yaml", ["architecture=loo-speech"])
