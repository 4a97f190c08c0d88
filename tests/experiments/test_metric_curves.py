"""Metrics over training in `mot compare`: kept checkpoints measured by `mot eval`, curves, step
matching on each metric (more-is-better metrics the right way round), resumed without re-measuring."""

import json

import pytest

from mot.config import ConfigError
from mot.experiments.compare import run_compare
from mot.experiments.experiment import EvalSchedule, ExperimentConfig
from mot.experiments.metric_curves import (headline, metric_curves, metric_seed_summary, metric_seeds_markdown,
                                          metric_step_matching)
from mot.eval.run_eval import EVAL_JSON, FORMAT

from tests.helpers import experiment_recipe


def test_headline_numbers_of_each_metric():
    metrics = {"loss": {"valid": {"text": 4.0}},
               "perplexity": {"valid": {"text_to_image": {"perplexity": 30.0, "nll": 3.4}}},
               "fid": {"valid": {"value": 12.5, "generated": 64}},
               "attributes": {"heldout": {"background": 0.9, "count": 0.5, "relation": None, "all": 0.4}},
               "speech_units": {"valid": {"unit_js_distance": 0.2, "duration_error_relative": 0.3}}}
    assert headline(metrics) == {"perplexity valid text_to_image": 30.0, "fid valid": 12.5,
                                 "attributes heldout mean": 0.7, "speech_units valid js": 0.2,
                                 "speech_units valid duration": 0.3}


def test_step_matching_on_metrics_where_less_or_more_is_better():
    curves = {"fid valid": {"dense": [[100, 30.0], [200, 20.0]], "mot": [[100, 25.0], [200, 15.0]]},
              "cider valid": {"dense": [[100, 0.2], [200, 0.4]], "mot": [[100, 0.4], [200, 0.6]]},
              "bleu valid": {"dense": [[100, 0.2], [200, 0.4]], "mot": [[100, 0.1], [200, 0.3]]}}
    matched = metric_step_matching(curves, "dense")
    assert matched["fid valid"]["mot"] == pytest.approx(150 / 200)  # 25 -> 15 crosses 20 half-way
    assert matched["cider valid"]["mot"] == pytest.approx(100 / 200)  # already at 0.4 at step 100
    assert matched["bleu valid"]["mot"] is None  # never reaches 0.4


def write_fid_record(run_dir, values):
    """An ``eval.json`` with an FID per step: ``{step: value}``."""
    run_dir.mkdir(parents=True)
    checkpoints = {str(step): {"metrics": {"fid": {"valid": {"value": value}}}, "seconds": {}, "options": {}}
                   for step, value in values.items()}
    (run_dir / EVAL_JSON).write_text(json.dumps({"format": FORMAT, "checkpoints": checkpoints}))
    return run_dir


def test_the_metrics_over_seeds_give_each_seeds_final_value_and_the_spread_of_the_shares(tmp_path):
    fids = {0: {"dense": {100: 30.0, 200: 20.0}, "mot": {100: 25.0, 200: 15.0}},  # mot reaches 20 at 150/200
            1: {"dense": {100: 40.0, 200: 30.0}, "mot": {100: 35.0, 200: 32.0}},  # never reaches 30
            2: {"dense": {100: 30.0, 200: 25.0}, "mot": {100: 25.0, 200: 20.0}},  # already at 25 at step 100
            3: {}}  # not measured (yet): left out
    dirs = {seed: {label: write_fid_record(tmp_path / str(seed) / label, values) for label, values in by.items()}
            for seed, by in fids.items()}
    curves = {seed: metric_curves(run_dirs) for seed, run_dirs in dirs.items()}
    summary = metric_seed_summary(curves, "dense")
    assert summary["seeds"] == [0, 1, 2]
    spread = summary["step_matching"]["fid valid"]["mot"]
    assert spread["by_seed"] == {"0": pytest.approx(0.75), "1": None, "2": pytest.approx(0.5)}
    assert (spread["median"], spread["min"], spread["max"]) == (pytest.approx(0.75), pytest.approx(0.5), None)
    final = summary["final"]["fid valid"]
    assert final["dense"] == {"by_seed": {"0": 20.0, "1": 30.0, "2": 25.0}, "min": 20.0, "max": 30.0}
    assert "dense" not in summary["step_matching"]["fid valid"]
    text = "\n".join(metric_seeds_markdown(summary, "dense"))
    assert "## Metrics over training, over seeds 0, 1, 2" in text
    assert "| fid valid | 20 / 30 / 25 | 15 / 32 / 20 | 75.0% [50.0%–not reached] |" in text
    assert metric_seed_summary({0: curves[0], 3: curves[3]}, "dense") is None  # one seed measured: no spread


def experiment(corpus, out, **fields):
    recipe = experiment_recipe(corpus, out, steps=4)
    return ExperimentConfig(name="followed", recipe=str(recipe), out_dir=str(out), overrides=["model.max_seq_len=128"],
                            architectures={"dense": ["architecture=dense"], "mot": ["architecture=mot"]},
                            **fields)


def test_a_comparison_follows_its_metrics_over_training_and_resumes_without_remeasuring(small_corpus, tmp_path,
                                                                                         monkeypatch):
    config = experiment(small_corpus, tmp_path, eval=EvalSchedule(every=2, metrics=["perplexity"], pairs=2))
    report = run_compare(config, log=lambda _: None)
    results = json.loads((report / "results.json").read_text())
    curves = results["metrics_over_training"]["curves"]
    assert curves["perplexity valid text_to_image"]["mot"][0][0] == 2
    assert [step for step, _ in curves["perplexity valid text_to_image"]["dense"]] == [2, 4]
    assert "mot" in results["metrics_over_training"]["step_matching"]["perplexity valid image_to_text"]
    text = (report / "report.md").read_text()
    assert "## Metrics over training" in text and (report / "metrics.png").stat().st_size > 1000
    evaluated = json.loads((config.directory / "runs" / "mot" / "eval.json").read_text())
    assert list(evaluated["checkpoints"]) == ["2", "4"]

    import mot.experiments.metric_curves as module

    calls = []
    monkeypatch.setattr(module, "evaluate_run", lambda *args, **kwargs: calls.append(args))
    run_compare(config, log=lambda _: None)
    assert calls == []  # every kept checkpoint was measured with these settings already


def test_every_seeds_checkpoints_are_measured_and_the_report_gives_their_spread(small_corpus, tmp_path):
    config = experiment(small_corpus, tmp_path, eval=EvalSchedule(every=2, metrics=["perplexity"], pairs=2),
                        seeds=[0, 5])
    report = run_compare(config, log=lambda _: None)
    for run in ("mot", "seed-5/mot"):
        evaluated = json.loads((config.directory / "runs" / run / "eval.json").read_text())
        assert list(evaluated["checkpoints"]) == ["2", "4"]
    over_seeds = json.loads((report / "results.json").read_text())["metrics_over_training"]["seeds"]
    assert over_seeds["seeds"] == [0, 5]
    spread = over_seeds["step_matching"]["perplexity valid image_to_text"]["mot"]
    assert set(spread["by_seed"]) == {"0", "5"}
    finals = over_seeds["final"]["perplexity valid image_to_text"]["dense"]["by_seed"]
    assert finals["0"] != finals["5"]  # another seed's weights, data and validation draw
    assert "## Metrics over training, over seeds 0, 5" in (report / "report.md").read_text()


def test_a_metric_the_setting_cannot_support_fails_before_training(small_corpus, tmp_path):
    config = experiment(small_corpus, tmp_path, eval=EvalSchedule(every=2, metrics=["wer"]))
    with pytest.raises(ConfigError, match="wer needs a model of speech"):
        run_compare(config, log=lambda _: None)
    assert not (tmp_path / "followed" / "runs").exists()


def test_eval_schedule_values_are_checked(small_corpus, tmp_path):
    with pytest.raises(ConfigError, match="eval.every=-1"):
        experiment(small_corpus, tmp_path, eval=EvalSchedule(every=-1))
    with pytest.raises(ConfigError, match="eval.samples=0"):
        experiment(small_corpus, tmp_path, eval=EvalSchedule(every=2, samples=0))
