"""``mot eval``: checkpoints measured into eval.json / eval.md, reproducing the trainer's numbers."""

import json

import pytest

from mot.config import ConfigError
from mot.eval.catalogue import check_metrics, supported
from mot.eval.run_eval import EVAL_JSON, EVAL_MD, EvalOptions, checkpoint_steps, evaluate_run, read_results
from mot.train.trainer import Trainer
from tests.helpers import small_recipe


def quiet(_):
    pass


@pytest.fixture(scope="module")
def run(small_corpus, tmp_path_factory):
    """A Chameleon run of 4 steps, evaluated by the trainer and checkpointed at steps 2 and 4."""
    runs = tmp_path_factory.mktemp("eval_runs")
    Trainer(small_recipe(small_corpus, runs, steps=4, eval_every=2, checkpoint_every=2, name="evaluated"),
            log=quiet).train()
    return runs / "evaluated"


def logged_validation(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r.get("kind") == "valid"}


def test_eval_reproduces_the_logged_validation_losses_of_every_checkpoint_exactly(run, tmp_path):
    results = evaluate_run(run, EvalOptions(checkpoint="all", metrics=["loss"]), log=quiet, out=tmp_path)
    logged = logged_validation(run)
    assert sorted(results) == [2, 4]
    for step, result in results.items():
        assert result["metrics"]["loss"] == logged[step]  # bit for bit: the same batches and sums
    record = read_results(tmp_path)
    assert list(record["checkpoints"]) == ["2", "4"]
    assert "| loss | valid/text |" in (tmp_path / EVAL_MD).read_text()


def test_the_causal_loss_equals_the_loss_without_an_moe_and_differs_with_expert_choice(run, small_corpus,
                                                                                       tmp_path):
    """Expert-Choice picks each expert's tokens from the whole batch, later tokens included; routed token
    by token (as in generation) an MoE-4x model scores differently, a model without an MoE the same."""
    options = EvalOptions(metrics=["loss", "causal_loss"], splits=["valid"])
    mot = evaluate_run(run, options, log=quiet, out=tmp_path / "mot")[4]["metrics"]
    assert mot["causal_loss"] == mot["loss"]
    Trainer(small_recipe(small_corpus, tmp_path / "runs", steps=2, checkpoint_every=2, name="moe",
                         architecture="moe4x"), log=quiet).train()
    moe = evaluate_run(tmp_path / "runs" / "moe", options, log=quiet, out=tmp_path / "moe")[2]["metrics"]
    for modality in ("text", "image"):
        loss, causal = moe["loss"]["valid"][modality], moe["causal_loss"]["valid"][modality]
        assert 0 < causal < 20 and causal != loss
    assert "| causal_loss | valid/text |" in (tmp_path / "moe" / EVAL_MD).read_text()


def test_evaluating_one_checkpoint_keeps_the_numbers_of_the_others(run, tmp_path):
    evaluate_run(run, EvalOptions(checkpoint="all", metrics=["loss"]), log=quiet, out=tmp_path)
    before = read_results(tmp_path)["checkpoints"]
    evaluate_run(run, EvalOptions(checkpoint="4", metrics=["perplexity"], pairs=4), log=quiet, out=tmp_path)
    after = read_results(tmp_path)["checkpoints"]
    assert after["2"] == before["2"]
    assert after["4"]["metrics"]["loss"] == before["4"]["metrics"]["loss"]
    assert set(after["4"]["metrics"]) == {"loss", "perplexity"}
    assert set(after["4"]["seconds"]) == {"loss", "perplexity"}


def test_conditional_perplexities_score_only_the_predicted_part_and_are_deterministic(run, tmp_path):
    options = EvalOptions(metrics=["perplexity"], splits=["valid"], pairs=3)
    first = evaluate_run(run, options, log=quiet, out=tmp_path / "a")[4]["metrics"]["perplexity"]["valid"]
    second = evaluate_run(run, options, log=quiet, out=tmp_path / "b")[4]["metrics"]["perplexity"]["valid"]
    assert first == second
    to_image, to_text = first["text_to_image"], first["image_to_text"]
    assert to_image["documents"] == to_text["documents"] > 0
    # text -> image scores exactly the image codes of each document (not <eoi>, not the caption)
    assert to_image["tokens"] == to_image["documents"] * tokens_per_image(run)
    assert 1 < to_image["perplexity"] < 1e6 and 1 < to_text["perplexity"] < 1e6
    assert 0 < to_text["tokens"] < to_image["tokens"]  # captions are shorter than images
    assert sum(entry["documents"] for entry in to_image["by_source"].values()) == to_image["documents"]


def tokens_per_image(run_dir):
    from mot.runs.recipe import load_recipe
    from mot.tokenizers.image_vq import ImageVQ

    corpus = load_recipe(run_dir / "config.yaml").data.corpus
    return ImageVQ.load(f"{corpus}/tokenizers/image_vq").config.tokens_per_image


def test_checkpoint_choices():
    assert checkpoint_steps([2, 4], "latest", "run") == [4]
    assert checkpoint_steps([2, 4], "all", "run") == [2, 4]
    assert checkpoint_steps([2, 4], "2", "run") == [2]
    assert checkpoint_steps([2, 4, 6], "6,2", "run") == [2, 6]
    with pytest.raises(ConfigError, match="checkpoints of steps \\[2, 4\\]"):
        checkpoint_steps([2, 4], "3", "run")
    with pytest.raises(ConfigError, match="expected latest, all, a step number or steps separated by commas"):
        checkpoint_steps([2, 4], "newest", "run")
    with pytest.raises(ConfigError, match="no checkpoint"):
        checkpoint_steps([], "latest", "run")


def test_a_metric_the_setting_cannot_support_is_named_with_the_setting():
    with pytest.raises(ConfigError, match="fid needs a model of image.*chameleon setting has only text"):
        check_metrics(["fid"], "chameleon", ["text"])
    with pytest.raises(ConfigError, match="wer needs a model of speech.*transfusion"):
        check_metrics(["wer"], "transfusion", ["text", "image"])
    with pytest.raises(ConfigError, match="perplexity is not defined for the transfusion setting"):
        check_metrics(["perplexity"], "transfusion", ["text", "image"])
    with pytest.raises(ConfigError, match="unknown metric 'fidd'"):
        check_metrics(["fidd"], "chameleon", ["text", "image"])
    assert supported("chameleon", ["text"]) == ["loss", "causal_loss"]
    assert check_metrics(["bleu", "loss"], "chameleon", ["text", "image"]) == ["loss", "bleu"]


def test_bad_requests_fail_before_anything_is_evaluated(run, tmp_path):
    with pytest.raises(ConfigError, match="wer needs a model of speech"):
        evaluate_run(run, EvalOptions(metrics=["wer"]), log=quiet, out=tmp_path)
    with pytest.raises(Exception, match="split"):
        evaluate_run(run, EvalOptions(metrics=["loss"], splits=["test"]), log=quiet, out=tmp_path)
    (tmp_path / EVAL_JSON).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON.*move it aside"):
        evaluate_run(run, EvalOptions(metrics=["loss"]), log=quiet, out=tmp_path)
    assert (tmp_path / EVAL_JSON).read_text() == "{not json"  # nothing lost


def test_mot_eval_command_writes_into_the_run_directory_by_default(run, tmp_path, capsys):
    import shutil

    from mot.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["eval", str(copy), "--metrics", "loss"]) == 0
    assert (copy / EVAL_JSON).is_file() and (copy / EVAL_MD).is_file()
    assert main(["eval", str(copy), "--metrics", "cider", "--checkpoint", "3"]) == 2
    assert "checkpoints of steps [2, 4]" in capsys.readouterr().err


def test_documents_longer_than_the_models_context_are_counted_not_scored(run):
    from mot.data.settings import open_corpus
    from mot.eval.conditional import conditional_losses, paired_documents
    from mot.runs.model import load_run_model

    config, model = load_run_model(run, log=quiet)
    corpus = open_corpus(config.data.corpus)
    pairs = paired_documents(corpus, "chameleon", "valid", "image", 2)
    model.config.max_seq_len = min(len(p.text) + len(p.other) for p in pairs) + 3  # one token short for all
    result = conditional_losses(model, corpus.layout("chameleon"), pairs, "image")["text_to_image"]
    assert result["too_long"] == len(pairs) and result["documents"] == 0 and result["tokens"] == 0
