"""`mot compare --report-only`: a report from the runs that have finished, nothing trained, the rest
named; refused while the reference has not finished."""

import json

import pytest
import yaml

from mot.cli import main
from mot.config import ConfigError
from mot.experiments.compare import run_compare
from mot.experiments.series import SeriesConfig, point_experiments

from tests.experiments.test_compare import experiment

TWO = {"dense": ["architecture=dense"], "mot": ["architecture=mot"]}


def unfinish(run_dir):
    """As if the run had been stopped before its last checkpoint (the trainer names it step-00000004)."""
    final = run_dir / "checkpoints" / "step-00000004"
    final.rename(final.with_name(final.name + ".tmp"))


def forbid_training(monkeypatch):
    import mot.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module.Trainer, "train", lambda self: pytest.fail("--report-only trained"))


def test_the_report_covers_what_has_finished_and_names_the_rest(small_corpus, tmp_path, monkeypatch):
    config = experiment(small_corpus, tmp_path, architectures=TWO, seeds=[0, 5])
    full = json.loads((run_compare(config, log=lambda _: None) / "results.json").read_text())
    runs = config.directory / "runs"
    unfinish(runs / "seed-5" / "mot")
    forbid_training(monkeypatch)
    messages = []
    report = run_compare(config, log=messages.append, report_only=True)
    results = json.loads((report / "results.json").read_text())
    assert results["missing"] == ["mot (seed 5)"]
    assert "not trained yet, left out of the report: mot (seed 5)" in messages
    assert results["step_matching"] == full["step_matching"]  # seed 0 is whole: the same numbers as before
    spread = results["seeds"]["step_matching"]["mot"]["train/image"]
    assert set(spread["by_seed"]) == {"0"}  # seed 5's mot left out ...
    assert set(results["seeds"]["final_loss"]["dense"]["train/image"]["by_seed"]) == {"0", "5"}  # ... its dense kept
    text = (report / "report.md").read_text()
    assert "## Not trained yet" in text and "mot (seed 5)" in text and "(1 of 2 seeds)" in text

    unfinish(runs / "seed-5" / "dense")  # a seed without its reference compares nothing
    results = json.loads((run_compare(config, log=lambda _: None, report_only=True) / "results.json").read_text())
    assert results["missing"] == ["seed 5 (its 'dense' has not finished)"] and results["seeds"] is None


def test_without_a_finished_reference_there_is_nothing_to_report(small_corpus, tmp_path, capsys, monkeypatch):
    forbid_training(monkeypatch)
    config = experiment(small_corpus, tmp_path, architectures=TWO)
    with pytest.raises(ConfigError, match="reference 'dense' has not finished training"):
        run_compare(config, log=lambda _: None, report_only=True)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({k: getattr(config, k) for k in ("name", "recipe", "out_dir", "architectures")}))
    assert main(["compare", "--config", str(path), "--report-only"]) == 2
    assert "has not finished training" in capsys.readouterr().err
    assert not (config.directory / "report").exists()


def test_a_series_report_leaves_out_the_points_not_trained_yet(small_corpus, tmp_path, monkeypatch):
    series = SeriesConfig(axis="tokens_per_step", points={"b1": ["data.batch_rows=1"], "b2": []})
    config = experiment(small_corpus, tmp_path, architectures=TWO, series=series)
    run_compare(point_experiments(config)["b1"], log=lambda _: None)  # only the first point trained
    forbid_training(monkeypatch)
    messages = []
    report = run_compare(config, log=messages.append, report_only=True)
    results = json.loads((report / "results.json").read_text())
    assert list(results["points"]) == ["b1"]
    assert "series tiny: point b2 left out, its reference has not finished" in messages
    assert "`b2`: the experiment as it is (left out: its reference has not finished training)" in (
        report / "report.md").read_text()
    untrained = experiment(small_corpus, tmp_path / "untrained", architectures=TWO, series=series)
    with pytest.raises(ConfigError, match="no point of series 'tiny' has a finished reference"):
        run_compare(untrained, log=lambda _: None, report_only=True)
