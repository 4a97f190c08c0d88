"""One prepared corpus, three settings: Chameleon, Chameleon+Speech and Transfusion views, the
held-out compositional split, the speech mixture."""

import json

import numpy as np
import pytest
import torch

from mot import ModelConfig, build_model
from mot.data.prepare import PrepareConfig, prepare
from mot.data.settings import SPEECH_MIXTURE, CorpusError, open_corpus
from mot.data.shards import ShardReader
from mot.data.sources.shapescenes import HELDOUT_PAIRS
from mot.tokenizers.image_vae import ImageVAE

SMALL = dict(shapescenes=30, digits=10, text_documents=0, text_vocab=300, vq_steps=3, vq_batch_size=16,
             vae_steps=3, vae_batch_size=16, image_tokenizers=["vq", "vae"], shapescenes_heldout=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    prepare(PrepareConfig(out_dir=str(out), **SMALL), log=lambda _: None)
    return open_corpus(out)


def model_for(layout, modalities=None):
    return build_model(ModelConfig(vocab_size=layout.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=512,
                                   modalities=modalities or layout.modalities))


def test_the_chameleon_view_reads_token_shards(corpus):
    assert sorted(corpus.shard_names("chameleon", "train")) == ["shards/digits-train", "shards/shapescenes-train"]
    layout = corpus.layout("chameleon")
    config = model_for(layout).config
    batch = next(corpus.loader("chameleon", "train", seq_len=200, batch_rows=2,
                               modality_tower_index=config.modality_tower_index))
    assert batch.latents is None and (batch.modality_ids == 1).any()
    assert torch.isfinite(model_for(layout)(**batch.model_inputs()).logits).all()


def test_the_transfusion_view_pairs_each_image_span_with_its_vae_latent(corpus):
    manifest = corpus.manifest
    latent = manifest["latent"]
    assert latent["latent_shape"] == [4, 4, 4]
    assert corpus.patches_per_image() == 4 and corpus.patches_per_image(1) == 16 and corpus.patches_per_image(4) == 1
    assert corpus.layout("transfusion").modality_sizes == {"text": 300, "image": 1}
    names = corpus.shard_names("transfusion", "valid")
    assert sorted(names) == ["latent_shards/digits-valid", "latent_shards/shapescenes-valid"]

    # a latent shard holds the VAE encoding of the same images, with the same caption and order
    layout, tokens_layout = corpus.layout("transfusion"), corpus.layout("chameleon")
    latents = ShardReader(corpus.directory / "latent_shards/shapescenes-valid", layout)
    tokens = ShardReader(corpus.directory / "shards/shapescenes-valid", tokens_layout)
    text_start, text_stop = layout.id_range("text")
    assert tokens_layout.id_range("text") == (text_start, text_stop)
    for index in range(len(latents)):
        stream, discrete = latents.stream(index), tokens.stream(index)
        words = [t for t in stream.tokens if text_start <= t < text_stop]
        assert words and words == [t for t in discrete.tokens if text_start <= t < text_stop]
        assert (stream.spans[0][0] == 2) == (discrete.spans[0][0] == 2)  # the image first in both, or in neither
        assert len(stream.latents) == 1

    config = model_for(layout).config
    batch = next(corpus.loader("transfusion", "train", seq_len=128, batch_rows=2,
                               modality_tower_index=config.modality_tower_index))
    assert batch.latents.shape[1:] == (4, 4, 4) and len(batch.latents) == len(batch.latent_starts) > 0
    assert (batch.span_ids > 0).sum() == 4 * len(batch.latents)  # images attend within themselves
    # the patch size is the model's choice: 1x1 patches give 16 placeholders per image
    fine = next(corpus.loader("transfusion", "train", seq_len=128, batch_rows=2, latent_patch_size=1,
                              modality_tower_index=config.modality_tower_index))
    assert (fine.span_ids > 0).sum() == 16 * len(fine.latents)
    with pytest.raises(CorpusError, match="latent_patch_size=3 does not divide the 4x4 latents"):
        corpus.loader("transfusion", "train", seq_len=128, batch_rows=2, latent_patch_size=3,
                      modality_tower_index=config.modality_tower_index)


def test_latent_shards_hold_the_vae_encoding_of_their_images(corpus):
    vae = ImageVAE.load(corpus.directory / "tokenizers" / "image_vae")
    reader = ShardReader(corpus.directory / "latent_shards/shapescenes-heldout", corpus.layout("transfusion"))
    from mot.data.sources.shapescenes import shapescenes

    scenes = list(shapescenes(8, seed=0, split="heldout"))
    expected = vae.encode(np.stack([scene.segments[0].array for scene in scenes])).numpy()
    stored = np.concatenate([reader.stream(i).latents for i in range(len(reader))])
    np.testing.assert_allclose(stored, expected, atol=1e-6)


def test_the_heldout_split_is_the_compositional_test_set(corpus):
    assert corpus.shard_names("chameleon", "heldout") == ["shards/shapescenes-heldout"]
    assert corpus.shard_names("transfusion", "heldout") == ["latent_shards/shapescenes-heldout"]
    assert corpus.manifest["shards"]["shards/shapescenes-heldout"]["documents"] == 8
    pairs = {tuple(pair) for pair in HELDOUT_PAIRS}
    from mot.data.sources.shapescenes import shapescenes

    for scene in shapescenes(8, seed=0, split="heldout"):
        assert {(o["colour"], o["shape"]) for o in scene.meta["objects"]} & pairs
    # its images were not used to train the tokenizers
    record = json.loads((corpus.directory / "tokenizers" / "image_vq.json").read_text())
    assert record["train_images"] + record["heldout_images"] == 28 + 9  # the train splits of 30 and 10 images


def test_bad_requests_name_what_is_missing(corpus, tmp_path):
    with pytest.raises(CorpusError, match="unknown setting 'dalle'"):
        corpus.layout("dalle")
    with pytest.raises(CorpusError, match="has no speech"):
        corpus.layout("chameleon_speech")
    with pytest.raises(CorpusError, match=r"no 'test' shards .* splits: \['heldout', 'train', 'valid'\]"):
        corpus.shard_names("chameleon", "test")
    with pytest.raises(CorpusError, match=r"weights name sources \['fortunes'\]"):
        corpus.datasets("chameleon", "train", weights={"fortunes": 2.0})
    # a source of the train split that the heldout split lacks: its weight serves the train split only
    heldout = corpus.datasets("chameleon", "heldout", weights={"digits": 5.0})
    assert {corpus.manifest["shards"][name]["source"] for name, _, _ in heldout} == {"shapescenes"}
    with pytest.raises(CorpusError, match="run `mot prepare"):
        open_corpus(tmp_path)
    only_vq = tmp_path / "vq"
    prepare(PrepareConfig(out_dir=str(only_vq), **dict(SMALL, image_tokenizers=["vq"], digits=0)), log=lambda _: None)
    with pytest.raises(CorpusError, match="has no latent shards"):
        open_corpus(only_vq).layout("transfusion")
    only_vae = tmp_path / "vae"
    prepare(PrepareConfig(out_dir=str(only_vae), **dict(SMALL, image_tokenizers=["vae"], digits=0)), log=lambda _: None)
    with pytest.raises(CorpusError, match="has no image tokens"):
        open_corpus(only_vae).layout("chameleon")
    assert open_corpus(only_vae).shard_names("transfusion", "train") == ["latent_shards/shapescenes-train"]


def test_weights_replace_the_document_counts(corpus):
    weights = {name: weight for name, _, weight in corpus.datasets("chameleon", "train", weights={"digits": 5.0})}
    assert weights == {"shards/shapescenes-train": 28.0, "shards/digits-train": 5.0}


def test_chameleon_speech_mixes_speech_one_to_six(tmp_path):
    from mot.data.sources.speech import available_engines

    if not available_engines():
        pytest.skip("neither espeak-ng nor flite is installed (apt-get install espeak-ng flite)")
    config = PrepareConfig(out_dir=str(tmp_path), **dict(SMALL, image_tokenizers=["vq"], digits=0, text_documents=0,
                                                          speech_utterances=30, speech_units=8, speech_only=0.4,
                                                          vocoder_steps=0))
    prepare(config, log=lambda _: None)
    corpus = open_corpus(tmp_path)
    datasets = corpus.datasets("chameleon_speech", "train")
    weights = {name: weight for name, _, weight in datasets}
    assert weights["shards/speech-train"] / weights["shards/shapescenes-train"] == pytest.approx(
        SPEECH_MIXTURE[0] / SPEECH_MIXTURE[1])
    assert "shards/speech-train" not in corpus.shard_names("chameleon", "train")
    # the three speech layouts: speech only, speech -> text, text -> speech
    reader = dict((n, r) for n, r, _ in datasets)["shards/speech-train"]
    layouts = set()
    for index in range(len(reader)):
        stream = reader.stream(index)
        speech_start = stream.spans[0][0]
        text_before = speech_start > 2  # <bos> <bos_speech> opens a speech-first document
        text_after = stream.spans[0][1] + 2 < len(stream.tokens)
        layouts.add((text_before, text_after))
    assert layouts == {(False, False), (False, True), (True, False)}
    layout = corpus.layout("chameleon_speech")
    config = model_for(layout).config
    batch = next(corpus.loader("chameleon_speech", "train", seq_len=256, batch_rows=2,
                               modality_tower_index=config.modality_tower_index))
    assert torch.isfinite(model_for(layout)(**batch.model_inputs()).logits).all()
    # the text-and-image view reads the same corpus through the smaller vocabulary
    chameleon = corpus.layout("chameleon")
    assert chameleon.vocab_size == layout.vocab_size - 8 - 2
