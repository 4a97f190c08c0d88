"""The generation metrics of `mot eval`: runs draw, caption and speak, scored against the corpus's
held-out sets in the feature network's space; deterministic for a seed; a missing or replaced
feature network or evaluation set is refused."""

import numpy as np
import pytest

from mot.config import ConfigError
from mot.data.prepare.config import PrepareError
from mot.data.settings import open_corpus
from mot.eval.generation_scores import feature_network, speech_scores
from mot.eval.run_eval import EvalOptions, evaluate_run
from mot.generate.chameleon import ChameleonPipeline
from mot.model.transformer import build_model
from mot.tokenizers.vocab import VocabLayout

from tests.helpers import tiny_config

IMAGES = ["fid", "kid", "attributes", "cider", "bleu"]


def quiet(_):
    pass


def test_a_chameleon_run_is_scored_on_every_image_metric_the_same_way_twice(chameleon_run, tmp_path):
    options = EvalOptions(metrics=IMAGES, splits=["valid"], samples=4, seed=3)
    first = evaluate_run(chameleon_run, options, log=quiet, out=tmp_path / "a")
    second = evaluate_run(chameleon_run, options, log=quiet, out=tmp_path / "b")
    numbers = next(iter(first.values()))["metrics"]
    assert numbers == next(iter(second.values()))["metrics"]
    assert numbers["fid"]["valid"]["value"] > 0 and numbers["fid"]["valid"]["generated"] == 4
    assert numbers["fid"]["valid"]["real"] >= 4  # every held-out image of the source, not only those prompted
    assert "std" in numbers["kid"]["valid"]
    attributes = numbers["attributes"]["valid"]
    assert attributes["items"] + attributes["excluded"] == 4 and 0 <= attributes["background"] <= 1
    assert 0 <= numbers["cider"]["valid"]["value"] and 0 <= numbers["bleu"]["valid"]["value"] <= 1
    assert len(numbers["cider"]["valid"]["examples"]) == 4
    assert set(next(iter(first.values()))["seconds"]) == set(IMAGES)


def test_a_transfusion_run_draws_by_denoising(transfusion_run, tmp_path):
    options = EvalOptions(metrics=["fid", "attributes"], splits=["valid"], samples=3, denoising_steps=2)
    numbers = next(iter(evaluate_run(transfusion_run, options, log=quiet, out=tmp_path).values()))["metrics"]
    assert np.isfinite(numbers["fid"]["valid"]["value"]) and numbers["attributes"]["valid"]["items"] <= 3


def test_a_missing_or_replaced_feature_network_is_refused(small_corpus):
    corpus = open_corpus(small_corpus)
    assert feature_network(corpus).fingerprint() == corpus.manifest["tokenizers"]["image_features"]["fingerprint"]
    corpus.manifest["tokenizers"]["image_features"]["fingerprint"] = "0" * 16
    with pytest.raises(ConfigError, match="hash .* is not the 000000000000 the corpus's manifest records"):
        feature_network(corpus)
    del corpus.manifest["tokenizers"]["image_features"]
    with pytest.raises(ConfigError, match="no image feature network.*run `mot prepare`"):
        feature_network(corpus)


def test_a_source_without_an_evaluation_set_is_named(chameleon_run, tmp_path):
    with pytest.raises(PrepareError, match="no evaluation set digits-valid"):
        evaluate_run(chameleon_run, EvalOptions(metrics=["fid"], splits=["valid"], samples=2, source="digits"),
                     log=quiet, out=tmp_path)


def test_speech_is_transcribed_and_spoken_against_the_real_utterances(chameleon_run):
    run = ChameleonPipeline.from_run(chameleon_run, log=quiet)
    layout = VocabLayout({**run.layout.modality_sizes, "speech": 12})
    model = build_model(tiny_config(vocab_size=layout.vocab_size, modalities=layout.modalities)).eval()
    speaking = ChameleonPipeline(model, layout, run.text, run.vq, speech_max_units=6)
    texts, units = ["a red circle", "a blue square"], [np.array([1, 2, 3]), np.array([4, 5, 5, 6])]
    scores = speech_scores(speaking, texts, units, ["wer", "speech_units"], EvalOptions(seed=1))
    assert scores["wer"]["value"] >= 0 and scores["wer"]["items"] == 2
    spoken = scores["speech_units"]
    assert spoken["duration_error_seconds"] >= 0 and spoken["items"] == 2 and spoken["self_transcript_wer"] >= 0
    assert spoken["unit_js_distance"] is None or 0 <= spoken["unit_js_distance"] <= 1
    assert speech_scores(speaking, texts, units, ["wer", "speech_units"], EvalOptions(seed=1)) == scores
