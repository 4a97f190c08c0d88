"""`mot compare` in the Transfusion setting: diffusion losses in the report, the sample grid and
captions, a comparison that is not FLOPs-matched, and the shipped Transfusion experiments."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mot.config import ConfigError
from mot.experiments.compare import check_flops, run_compare
from mot.experiments.experiment import ExperimentConfig, SamplesConfig, architecture_recipes, load_experiment
from mot.runs.resolve import resolve_model

from tests.helpers import experiment_recipe

ROOT = Path(__file__).resolve().parents[2]


def experiment(corpus, out, **fields):
    recipe = experiment_recipe(corpus, out, transfusion=True, steps=2)
    settings = dict(name="tf", recipe=str(recipe), out_dir=str(out),
                    architectures={"dense": ["architecture=dense"], "mot": ["architecture=mot"]},
                    samples=SamplesConfig(prompts=["a large red circle on a white background", "a small blue star"],
                                          steps=3, per_prompt=2, captions=2, scored=3, scorer_scenes=60))
    settings.update(fields)
    return ExperimentConfig(**settings)


def test_a_transfusion_comparison_reports_diffusion_losses_samples_and_captions(small_corpus, tmp_path):
    report = run_compare(experiment(small_corpus, tmp_path), log=lambda _: None)
    results = json.loads((report / "results.json").read_text())
    mot = results["architectures"]["mot"]
    assert mot["setting"] == "transfusion" and set(mot["valid"]["valid"]) == {"text", "image"}
    assert "valid/image" in results["step_matching"]["mot"]
    samples = results["samples"]
    assert samples["grid"] == "samples.png" and (report / "samples.png").stat().st_size > 1000
    assert samples["sampling"]["steps"] == 3 and 1 <= len(samples["captions"]) <= 2
    assert set(samples["captions"][0]) == {"true", "dense", "mot"} and samples["captions"][0]["true"]
    scores = samples["scores"]
    assert 1 <= scores["scenes"] <= 3 and scores["ceiling"]["background"] > 0
    assert set(scores["mot"]) == {"text_to_image", "image_to_text", "caption_use"}
    assert set(scores["mot"]["caption_use"]) == {"caption", "other", "none", "bypass"}
    assert set(scores["mot"]["text_to_image"]) == {"background", "colour", "shape", "all"}
    text = (report / "report.md").read_text()
    assert "## Samples" in text and "![samples](samples.png)" in text and "diffusion loss" in text
    assert "| ceiling |" in text and "| mot |" in text and "| bypass |" in text


def test_a_comparison_that_is_not_flops_matched_reports_the_ratio(small_corpus, tmp_path):
    architectures = {"wide": ["architecture=dense", "model.d_model=48"], "mot": ["architecture=mot"]}
    config = experiment(small_corpus, tmp_path, architectures=architectures, reference="wide")
    recipes = {label: resolve_model(r, 306, ["text", "image"], 4) for label, r in architecture_recipes(config).items()}
    with pytest.raises(ConfigError, match="would not be FLOPs-controlled"):
        check_flops(recipes, "wide")
    rows = check_flops(recipes, "wide", matched=False)
    assert rows["mot"]["flops_ratio"] < 0.8
    config = replace(config, flops_matched=False, samples=SamplesConfig(prompts=[], captions=0, scored=0))
    report = run_compare(config, log=lambda _: None)
    assert "not FLOPs-matched" in (report / "report.md").read_text()
    assert not (report / "samples.png").exists()


def test_ddpm_and_flow_side_by_side_each_sample_with_their_own_method(small_corpus, tmp_path):
    flow = {"ddpm": ["architecture=dense"], "flow": ["architecture=dense", "diffusion.objective=flow"]}
    config = experiment(small_corpus, tmp_path, architectures=flow, reference="ddpm",
                        samples=SamplesConfig(prompts=["a red circle"], steps=2, per_prompt=1, captions=0, scored=0))
    report = run_compare(config, log=lambda _: None)
    samples = json.loads((report / "results.json").read_text())["samples"]
    assert samples["methods"] == {"ddpm": "ddpm", "flow": "euler"}
    assert "2 steps (ddpm: DDPM, flow: EULER)" in (report / "report.md").read_text()


def test_bad_sample_settings_fail_before_any_training(small_corpus, tmp_path):
    with pytest.raises(ConfigError, match="samples: method='rk4'"):
        experiment(small_corpus, tmp_path, samples=SamplesConfig(method="rk4"))
    flow = {"ddpm": ["architecture=dense"], "flow": ["architecture=dense", "diffusion.objective=flow"]}
    config = experiment(small_corpus, tmp_path, architectures=flow, reference="ddpm",
                        samples=SamplesConfig(method="ddim"))
    with pytest.raises(ConfigError, match="samples.method for architectures.flow: method 'ddim' does not sample a "
                                          "flow model"):
        architecture_recipes(config)
    with pytest.raises(ConfigError, match="samples.per_prompt=-1"):
        experiment(small_corpus, tmp_path, samples=SamplesConfig(per_prompt=-1))


@pytest.mark.parametrize("name, matched", [("transfusion", True), ("transfusion-half-flops", False),
                                           ("transfusion-linear", True), ("transfusion-linear-long", True),
                                           ("transfusion-flow", True)])
def test_the_shipped_transfusion_experiments(name, matched):
    config = load_experiment(ROOT / f"configs/experiments/{name}.yaml")
    config = replace(config, recipe=str(ROOT / config.recipe))
    assert config.flops_matched is matched and len(config.samples.prompts) >= 4
    for variant in (None, *config.variants):
        recipes = {label: resolve_model(r, 4106, ["text", "image"], 4)
                   for label, r in architecture_recipes(config, variant).items()}
        rows = check_flops(recipes, config.reference, matched)
        ratios = [row["flops_ratio"] for row in rows.values()]
        if matched:
            assert all(abs(r - 1) < 2e-3 for r in ratios)
        else:  # the paper's pair: MoT at about half the wide dense model's FLOPs
            assert 0.45 < rows["mot"]["flops_ratio"] < 0.55
