"""A series of comparisons (size, batch, length): every point a whole comparison in its own
directory, every point checked before the first trains, and a report of the shares along the axis."""

import json

import pytest

from mot.config import ConfigError
from mot.experiments.compare import run_compare
from mot.experiments.experiment import ExperimentConfig, architecture_recipes
from mot.experiments.series import SeriesConfig, point_experiments, series_markdown, series_summary

from tests.experiments.test_compare import experiment

TWO = {"dense": ["architecture=dense"], "mot": ["architecture=mot"]}


def test_a_batch_series_trains_every_point_and_reports_the_shares_along_the_axis(small_corpus, tmp_path):
    series = SeriesConfig(axis="tokens_per_step", points={"b1": ["data.batch_rows=1"], "b2": []})
    config = experiment(small_corpus, tmp_path, architectures=TWO, series=series)
    points = point_experiments(config)
    assert list(points) == ["b1", "b2"] and points["b1"].series.points == {}
    recipes = architecture_recipes(points["b1"])
    assert recipes["mot"].run_dir == tmp_path / "tiny" / "b1" / "runs" / "mot"
    assert recipes["mot"].data.batch_rows == 1
    assert architecture_recipes(points["b2"])["mot"].data.batch_rows == recipes["mot"].data.batch_rows + 1

    report = run_compare(config, log=lambda _: None)
    assert report == tmp_path / "tiny" / "report"
    for point in ("b1", "b2"):  # each point is a whole comparison with its own report
        assert (tmp_path / "tiny" / point / "report" / "results.json").is_file()
    results = json.loads((report / "results.json").read_text())
    point = json.loads((tmp_path / "tiny" / "b1" / "report" / "results.json").read_text())
    dense = point["architectures"]["dense"]
    assert dense["tokens_per_step"] == dense["environment"]["world_size"] * recipes["dense"].data.seq_len
    assert results["points"]["b1"]["x"] == dense["tokens_per_step"]
    assert results["points"]["b2"]["x"] == 2 * dense["tokens_per_step"]
    share = results["points"]["b1"]["step_matching"]["mot"]["train/image"]
    assert share["value"] == point["step_matching"]["mot"]["train/image"]["fraction"] and share["seeds"] == 1
    text = (report / "report.md").read_text()
    assert "## Share of steps" in text and "## Share of training seconds" in text
    assert "| mot | train/image |" in text and "`data.batch_rows=1`" in text
    assert (report / "share.png").stat().st_size > 1000


def test_every_point_is_checked_before_the_first_trains(small_corpus, tmp_path, monkeypatch):
    series = SeriesConfig(points={"ok": [], "bad": ["model.n_heads=3"]})  # 3 heads do not divide d_model
    config = experiment(small_corpus, tmp_path, architectures=TWO, series=series)
    import mot.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module.Trainer, "train", lambda self: pytest.fail("trained before checking"))
    with pytest.raises(ConfigError, match="n_heads"):
        run_compare(config, log=lambda _: None)


def results_with(shares, x, seeds=None):
    """A point's results.json with the mot share on valid/image (and, with ``seeds``, their spread)."""
    out = {"reference": "dense",
           "architectures": {"dense": {"parameters_total": x, "training_seconds": 60.0},
                             "mot": {"parameters_total": x + 1, "training_seconds": 61.0}},
           "step_matching": {"mot": {"valid/image": {"fraction": shares[0], "seconds_fraction": shares[0]}}}}
    if seeds:
        spread = {"median": shares[0], "min": min(s for s in shares if s is not None), "max": None}
        out["seeds"] = {"seeds": seeds, "step_matching": {"mot": {"valid/image": spread}},
                        "seconds_matching": {"mot": {"valid/image": spread}}}
    return out


def test_the_summary_reads_seed_spreads_and_marks_what_was_not_reached(tmp_path):
    summary = series_summary("parameters", {"small": results_with([None], 1e6),
                                            "large": results_with([0.8, 0.6, None], 4e6, seeds=[0, 1, 2])})
    small, large = summary["points"]["small"], summary["points"]["large"]
    assert small["x"] == 1e6 and small["step_matching"]["mot"]["valid/image"]["value"] is None
    assert large["step_matching"]["mot"]["valid/image"] == {"value": 0.8, "min": 0.6, "max": None, "seeds": 3}
    text = series_markdown("size", summary, {"small": ["model.d_model=64"], "large": []})
    assert "small (1.00M parameters)" in text and "large (4.00M parameters)" in text
    assert "| mot | valid/image | not reached | 80.0% [60.0%–not reached] |" in text
    assert "`large`: the experiment as it is" in text


@pytest.mark.parametrize("name", ["scaling-size", "scaling-batch", "scaling-length"])
def test_the_shipped_series_are_flops_controlled_at_every_point(name):
    from dataclasses import replace
    from pathlib import Path

    from mot.experiments.compare import check_flops
    from mot.experiments.experiment import load_experiment
    from mot.runs.resolve import resolve_model

    root = Path(__file__).resolve().parents[2]
    config = load_experiment(root / f"configs/experiments/{name}.yaml")
    config = replace(config, recipe=str(root / config.recipe))  # the recipe path is relative to the repository
    modalities = ["text", "image"] + (["speech"] if "speech" in config.recipe else [])
    points = point_experiments(config)
    assert len(points) >= 2
    for point in points.values():
        recipes = {label: resolve_model(r, 5603, modalities) for label, r in architecture_recipes(point).items()}
        assert all(abs(row["flops_ratio"] - 1) < 1e-3 for row in check_flops(recipes, point.reference).values())


@pytest.mark.parametrize("fields, message", [
    ({"axis": "width"}, "series.axis='width'"),
    ({"points": {"one": []}}, "at least two points"),
    ({"points": {"a/b": [], "c": []}}, "not a valid directory name"),
    ({"points": {"report": [], "c": []}}, "not a valid directory name"),
    ({"points": {"a": "steps=2", "c": []}}, "expected a list of key=value overrides"),
])
def test_bad_series_are_named(fields, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(architectures={"dense": []}, series=SeriesConfig(**fields))
