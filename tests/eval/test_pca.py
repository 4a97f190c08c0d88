"""Figure 2b: hidden states per layer and modality, their PCA, the separation number, and the
analysis of a trained run."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from mot import ModelConfig, build_model
from mot.config import ConfigError
from mot.data.packing import TokenizedDocument, pack
from mot.eval.pca import analyze_pca, hidden_states_by_modality, modality_separation, pca_figure, project
from mot.io import CheckpointError
from mot.runs.model import load_run_model
from mot.tokenizers.vocab import VocabLayout
from mot.train.trainer import Trainer

from tests.helpers import small_recipe

LAYOUT = VocabLayout({"text": 40, "image": 16})
TEXT, IMAGE = LAYOUT.id_range("text")[0], LAYOUT.id_range("image")[0]


@pytest.fixture
def model():
    return build_model(ModelConfig(vocab_size=LAYOUT.vocab_size, d_model=32, n_layers=2, n_heads=4)).eval()


@pytest.fixture
def batch(model):
    rng = np.random.default_rng(0)
    documents = [TokenizedDocument(f"{i}", (("text", TEXT + rng.integers(0, 40, 3 + i)),
                                            ("image", IMAGE + rng.integers(0, 16, 8))))
                 for i in range(6)]
    return pack(documents, seq_len=24, layout=LAYOUT, modality_tower_index=model.config.modality_tower_index)


def real_tokens(batch, modality):
    """``[n]`` ids of the non-padding tokens of ``modality`` (0 text, 1 image), row-major."""
    return batch.tokens[(batch.document_ids >= 0) & (batch.modality_ids == modality)]


def test_states_of_every_layer_and_modality_exclude_padding(model, batch):
    assert (batch.document_ids < 0).any()  # the batch has padding to leave out
    states = hidden_states_by_modality(model, [batch])
    assert sorted(states) == [0, 1, 2]  # the embeddings, then each block
    for layer in states:
        assert {m: x.shape for m, x in states[layer].items()} == {
            "text": (len(real_tokens(batch, 0)), 32), "image": (len(real_tokens(batch, 1)), 32)}
        assert all(x.dtype == np.float32 for x in states[layer].values())
    with torch.no_grad():
        embedded = model.embed(real_tokens(batch, 0)).numpy()
        last = model(**batch.model_inputs(), output_layer_states=True).layer_states[-1]
    np.testing.assert_array_equal(states[0]["text"], embedded)  # the right tokens, in order
    image = (batch.document_ids >= 0) & (batch.modality_ids == 1)
    np.testing.assert_array_equal(states[2]["image"], last[image].numpy())


def test_subsampling_caps_each_modality_with_the_same_seeded_tokens_at_every_layer(model, batch):
    everything = hidden_states_by_modality(model, [batch, batch])
    capped = hidden_states_by_modality(model, [batch, batch], max_tokens_per_modality=5, seed=3)
    assert {m: len(x) for m, x in capped[1].items()} == {"text": 5, "image": 5}
    # each chosen token is one of all the tokens at every layer at once: the same tokens at every layer
    for modality in everything[0]:
        full = np.concatenate([everything[layer][modality] for layer in everything], axis=1)  # [n, 3 * D]
        chosen = np.concatenate([capped[layer][modality] for layer in capped], axis=1)
        assert all((full == row).all(axis=1).any() for row in chosen)
    again = hidden_states_by_modality(model, [batch, batch], max_tokens_per_modality=5, seed=3)
    other = hidden_states_by_modality(model, [batch, batch], max_tokens_per_modality=5, seed=4)
    assert all(np.array_equal(again[2][m], capped[2][m]) for m in capped[2])
    assert not all(np.array_equal(other[2][m], capped[2][m]) for m in capped[2])
    with pytest.raises(ValueError, match="max_tokens_per_modality=0: expected at least 1"):
        hidden_states_by_modality(model, [batch], max_tokens_per_modality=0)


def test_a_modality_absent_from_the_batches_is_absent_from_the_result(model):
    text_only = pack([TokenizedDocument("t", (("text", TEXT + np.arange(5)),))], seq_len=12, layout=LAYOUT,
                     modality_tower_index=model.config.modality_tower_index)
    assert set(hidden_states_by_modality(model, [text_only])[1]) == {"text"}


def test_batches_without_real_tokens_are_refused(model, batch):
    with pytest.raises(ValueError, match="no batches to take hidden states from"):
        hidden_states_by_modality(model, [])
    padding = dataclasses.replace(batch, document_ids=torch.full_like(batch.document_ids, -1))
    with pytest.raises(ValueError, match="the batches hold only padding"):
        hidden_states_by_modality(model, [padding])
    with pytest.raises(ValueError, match="batches=0: expected at least 1"):
        analyze_pca("no-such-run", "unused", batches=0)


def clusters(offset, n=400, dims=16, seed=0):
    """Two modalities' [n, dims] Gaussian states, the image cluster shifted by ``offset`` on every axis."""
    rng = np.random.default_rng(seed)
    return {"text": rng.normal(size=(n, dims)), "image": rng.normal(size=(n, dims)) + offset}


def test_separation_is_chance_for_identical_distributions_and_one_for_distinct_clusters():
    separation = modality_separation({0: clusters(0.0), 3: clusters(10.0)})
    assert abs(separation[0] - 0.5) < 0.1
    assert separation[3] > 0.99
    with pytest.raises(ValueError, match=r"layer 0: tokens per modality \{'text': 400\}; separation needs"):
        modality_separation({0: {"text": clusters(0.0)["text"]}})


def test_projection_shares_the_axes_across_modalities():
    projection = project({1: clusters(10.0)})[1]
    assert {m: p.shape for m, p in projection.points.items()} == {"text": (400, 2), "image": (400, 2)}
    first, second = projection.explained_variance
    assert first > 0.5 > second  # the shift between the clusters is the first component
    gap = projection.points["image"][:, 0].mean() - projection.points["text"][:, 0].mean()
    assert abs(gap) > 30  # |shift| = 10 * sqrt(16) along the first component


def test_the_figure_is_written(model, batch, tmp_path):
    states = hidden_states_by_modality(model, [batch])
    out = pca_figure(states, tmp_path / "figures" / "pca.png", "random model")
    assert out == tmp_path / "figures" / "pca.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- a trained run ----

@pytest.fixture
def corpus(small_corpus):
    return small_corpus


def recipe(corpus, runs, **overrides):
    return small_recipe(corpus, runs, **{"steps": 3, "eval_every": 3, "data.grad_accum": 1, **overrides})


def quiet(_):
    pass


def test_load_run_model_gives_the_trained_model_in_eval_mode(corpus, tmp_path):
    with pytest.raises(ConfigError, match="is not a run directory: config.yaml is missing"):
        load_run_model(tmp_path, log=quiet)
    Trainer(recipe(corpus, tmp_path), log=quiet)  # the run directory, before any step
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        load_run_model(tmp_path / "run", log=quiet)
    trainer = Trainer(recipe(corpus, tmp_path), log=quiet)
    trainer.train()
    messages = []
    config, model = load_run_model(tmp_path / "run", log=messages.append)
    assert config == trainer.config and not model.training
    assert messages == [f"loaded {tmp_path / 'run' / 'checkpoints' / 'step-00000003'}"]
    for (name, a), b in zip(trainer.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_analyze_pca_writes_the_figure_and_the_numbers_of_a_trained_run(corpus, tmp_path):
    Trainer(recipe(corpus, tmp_path), log=quiet).train()
    result = analyze_pca(tmp_path / "run", tmp_path / "pca", batches=2, log=quiet)
    assert json.loads((tmp_path / "pca" / "pca.json").read_text()) == result
    assert (tmp_path / "pca" / "pca.png").read_bytes()[:4] == b"\x89PNG"
    assert result["split"] == "valid" and set(result["tokens"]) == {"text", "image"}
    assert [layer["name"] for layer in result["layers"]] == ["embeddings", "layer 1", "layer 2"]
    for layer in result["layers"]:
        assert 0 <= layer["separation"] <= 1
        assert 0 < layer["explained_variance"][1] <= layer["explained_variance"][0] < 1
    # text ids and image ids are disjoint vocabularies, so their embeddings are told apart
    assert result["layers"][0]["separation"] > 0.6
