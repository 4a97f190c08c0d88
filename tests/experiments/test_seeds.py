"""A comparison over seeds: each seed's runs in their own directories, step matching as median and
range, and final losses apart from the reference's only where no seed overlaps."""

import json

import pytest

from mot.config import ConfigError
from mot.experiments.compare import run_compare
from mot.experiments.experiment import ExperimentConfig, seeded_recipes
from mot.experiments.seeds import seed_summary, seeds_markdown

from tests.experiments.test_compare import experiment


def test_a_comparison_over_seeds_trains_each_seed_and_reports_the_spread(small_corpus, tmp_path):
    config = experiment(small_corpus, tmp_path, architectures={"dense": ["architecture=dense"],
                                                               "mot": ["architecture=mot"]}, seeds=[0, 5])
    recipes = seeded_recipes(config)
    assert list(recipes) == [0, 5]  # the recipe's own seed first, in the plain directories
    assert recipes[0]["mot"].run_dir == tmp_path / "tiny" / "runs" / "mot"
    assert recipes[5]["mot"].run_dir == tmp_path / "tiny" / "runs" / "seed-5" / "mot"
    assert recipes[5]["mot"].seed == 5 and recipes[5]["dense"].seed == 5
    report = run_compare(config, log=lambda _: None)
    results = json.loads((report / "results.json").read_text())
    spread = results["seeds"]["step_matching"]["mot"]["train/image"]
    assert set(spread["by_seed"]) == {"0", "5"} and results["seeds"]["seeds"] == [0, 5]
    reached = sorted(v for v in spread["by_seed"].values() if v is not None)
    if reached:
        assert spread["min"] == reached[0]
    finals = results["seeds"]["final_loss"]["mot"]["train/image"]
    assert finals["min"] <= finals["max"] and finals["apart"] in (True, False)
    assert results["seeds"]["final_loss"]["dense"]["train/image"]["apart"] is None
    assert "## Over seeds 0, 5" in (report / "report.md").read_text()
    by_seed = finals["by_seed"]  # seed 5 trained from other weights and data
    assert by_seed["0"] == results["architectures"]["mot"]["train"]["image"][-1][1] != by_seed["5"]


def test_a_warm_start_over_seeds_continues_each_seeds_own_source(small_corpus, tmp_path):
    source = "init.source=" + str(tmp_path / "sources" / "{runs}" / "dense")
    config = experiment(small_corpus, tmp_path, architectures={"scratch": ["architecture=mot"],
                                                               "warm": ["architecture=mot", source]},
                        reference="scratch", seeds=[0, 5])
    recipes = seeded_recipes(config)
    assert recipes[0]["warm"].init.source == str(tmp_path / "sources" / "runs" / "dense")
    assert recipes[5]["warm"].init.source == str(tmp_path / "sources" / "runs" / "seed-5" / "dense")
    assert not recipes[5]["scratch"].init.source
    config.variants = {"all-warm": [source]}  # a variant's overrides name the seed's folder too
    warm = seeded_recipes(config, "all-warm")
    assert warm[5]["scratch"].init.source == str(tmp_path / "sources" / "runs" / "seed-5" / "dense")


def curves(finals):
    """A result with a training curve per modality ending at ``finals`` (and a clock)."""
    return {"train": {m: [[1, 9.0], [2, loss]] for m, loss in finals.items()}, "valid": {}}


def test_the_spread_ranks_not_reached_last_and_marks_overlaps():
    matching = {s: {"mot": {"train/image": {"fraction": f, "seconds_fraction": f}}}
                for s, f in {0: 0.8, 1: None, 2: 0.6}.items()}
    results = {0: {"dense": curves({"image": 3.0}), "mot": curves({"image": 2.0})},
               1: {"dense": curves({"image": 3.1}), "mot": curves({"image": 3.05})},
               2: {"dense": curves({"image": 2.9}), "mot": curves({"image": 2.5})}}
    summary = seed_summary(matching, results, "dense")
    spread = summary["step_matching"]["mot"]["train/image"]
    assert (spread["median"], spread["min"], spread["max"]) == (0.8, 0.6, None)  # None: one seed never reached
    finals = summary["final_loss"]["mot"]["train/image"]
    assert (finals["min"], finals["max"], finals["apart"]) == (2.0, 3.05, False)  # 3.05 is inside dense's range
    results[1]["mot"] = curves({"image": 2.7})
    assert seed_summary(matching, results, "dense")["final_loss"]["mot"]["train/image"]["apart"] is True


def test_paired_differences_cancel_what_a_seed_does_to_both():
    matching = {s: {"mot": {"train/image": {"fraction": 0.9, "seconds_fraction": 0.9}}} for s in (0, 1, 2)}
    # seed 1's batches are harder for both: the ranges overlap, yet mot is lower in every seed
    results = {0: {"dense": curves({"image": 3.0, "text": 4.0}), "mot": curves({"image": 2.9, "text": 4.1})},
               1: {"dense": curves({"image": 3.5, "text": 4.0}), "mot": curves({"image": 3.3, "text": 3.9})},
               2: {"dense": curves({"image": 3.1, "text": 4.0}), "mot": curves({"image": 3.05, "text": 4.0})}}
    summary = seed_summary(matching, results, "dense")
    assert summary["final_loss"]["mot"]["train/image"]["apart"] is False
    image = summary["difference"]["mot"]["train/image"]
    assert image["by_seed"] == pytest.approx({"0": -0.1, "1": -0.2, "2": -0.05})
    assert (image["min"], image["max"], image["same_sign"]) == (pytest.approx(-0.2), pytest.approx(-0.05), True)
    text = summary["difference"]["mot"]["train/text"]
    assert text["same_sign"] is False  # +0.1, -0.1, 0.0: no order
    assert "dense" not in summary["difference"]
    table = "\n".join(seeds_markdown(summary, "dense", ["train/image", "train/text"]))
    assert "| mot | -0.100 / -0.200 / -0.050 ✓ | +0.100 / -0.100 / +0.000 |" in table
    one_seed = seed_summary({0: matching[0]}, {0: results[0]}, "dense")
    assert one_seed["difference"]["mot"]["train/image"]["same_sign"] is False  # one seed is no test


@pytest.mark.parametrize("seeds, message", [([0, 0], "repeats a seed"), ([-1], "-1 is not an integer >= 0"),
                                            (["1"], "'1' is not an integer >= 0")])
def test_bad_seeds_are_named(seeds, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(architectures={"dense": []}, seeds=seeds)
