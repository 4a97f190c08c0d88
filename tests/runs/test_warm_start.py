"""Warm starts: a MoT from a dense checkpoint (exactly the dense model's logits), a MoT with a new
modality whose tower copies a named one, the trainer's ``init:``, and the errors."""

import dataclasses

import pytest
import torch

from mot.config import ConfigError
from mot.data.settings import open_corpus
from mot.interop.towers import target_rows, warm_state
from mot.model.transformer import build_model
from mot.runs.model import load_run_model
from mot.runs.recipe import InitConfig
from mot.runs.warm_start import warm_start
from mot.tokenizers.vocab import VocabLayout
from mot.train.trainer import Trainer

from tests.helpers import random_batch, random_llama, small_recipe, tiny_config

quiet = lambda _: None  # noqa: E731


@pytest.fixture(scope="module")
def dense_run(small_corpus, tmp_path_factory):
    runs = tmp_path_factory.mktemp("dense_runs")
    Trainer(small_recipe(small_corpus, runs, architecture="dense", steps=3, checkpoint_every=3), log=quiet).train()
    return runs / "run"


def mot_config(small_corpus, runs, **overrides):
    from mot.runs.resolve import resolve_recipe

    return resolve_recipe(small_recipe(small_corpus, runs, **{"architecture": "mot", **overrides}))[0]


def test_a_mot_from_a_dense_checkpoint_gives_the_dense_logits(small_corpus, dense_run, tmp_path):
    _, dense = load_run_model(dense_run, log=quiet)
    config = mot_config(small_corpus, tmp_path)
    mot = build_model(config.model).eval()
    warm_start(mot, InitConfig(source=str(dense_run)), open_corpus(small_corpus).layout("chameleon"), log=quiet)
    tokens, modalities = random_batch(config.model, batch=3, length=40)
    with torch.no_grad():
        assert torch.equal(mot(tokens, modalities).logits, dense(tokens, modalities).logits)
    for tower in ("text", "image"):  # the paper's towers start equal
        assert torch.equal(mot.blocks[1].ffn.towers[tower].up.weight, dense.blocks[1].ffn.towers["shared"].up.weight)


def test_the_trainer_starts_from_init_and_a_resumed_run_from_its_checkpoint(small_corpus, dense_run, tmp_path):
    _, dense = load_run_model(dense_run, log=quiet)
    recipe = small_recipe(small_corpus, tmp_path, architecture="mot", **{"init.source": str(dense_run)},
                          steps=2, checkpoint_every=2)
    messages = []
    trainer = Trainer(recipe, log=messages.append)
    assert torch.equal(trainer.model.embed.weight, dense.embed.weight)
    assert torch.equal(trainer.model.head.weight, dense.head.weight)
    assert any(line.startswith(f"warm start from the run {dense_run}") for line in messages)
    trainer.train()
    _, trained = load_run_model(tmp_path / "run", log=quiet)
    resumed = Trainer(small_recipe(small_corpus, tmp_path, architecture="mot", **{"init.source": str(dense_run)},
                                   steps=4, checkpoint_every=2), log=quiet)
    assert torch.equal(resumed.model.embed.weight, trained.embed.weight)


def test_a_new_modality_copies_a_named_tower_and_keeps_every_token():
    source_layout = VocabLayout({"text": 40, "image": 16})
    target_layout = VocabLayout({"text": 40, "image": 16, "speech": 8})
    source = build_model(tiny_config(vocab_size=source_layout.vocab_size)).eval()
    target = build_model(tiny_config(vocab_size=target_layout.vocab_size, modalities=["text", "image", "speech"]))
    rows = target_rows(torch.from_numpy(source_layout.translation_to(target_layout)), target_layout.vocab_size)
    target.load_state_dict(warm_state(target, source.config, source.state_dict(), rows, {"speech": "image"}))
    target.eval()
    assert torch.equal(target.blocks[0].attention.qkv.towers["speech"].weight,
                       source.blocks[0].attention.qkv.towers["image"].weight)
    assert torch.equal(target.blocks[0].attention.qkv.towers["text"].weight,
                       source.blocks[0].attention.qkv.towers["text"].weight)
    speech_start, speech_stop = target_layout.id_range("speech")
    mean = source.embed.weight.mean(0)
    assert torch.allclose(target.embed.weight[speech_start:speech_stop], mean.expand(8, -1), atol=1e-7, rtol=0)
    # a text + image sequence, in each vocabulary's ids: the same logits for every token both have
    tokens, modalities = random_batch(source.config, batch=2, length=30)
    tokens = torch.where(modalities == 1, torch.randint(*source_layout.id_range("image"), tokens.shape),
                         torch.randint(*source_layout.id_range("text"), tokens.shape))
    translation = torch.from_numpy(source_layout.translation_to(target_layout))
    with torch.no_grad():
        before = source(tokens, modalities).logits
        after = target(translation[tokens], modalities).logits
    assert torch.allclose(after[..., translation], before, atol=1e-5, rtol=0)


def test_a_fresh_tower_keeps_its_initialisation():
    source = build_model(tiny_config())
    target = build_model(tiny_config())
    fresh = target.blocks[0].ffn.towers["image"].up.weight.clone()
    state = warm_state(target, source.config, source.state_dict(), torch.arange(97), {"image": "fresh"})
    assert torch.equal(state["blocks.0.ffn.towers.image.up.weight"], fresh)
    assert torch.equal(state["blocks.0.ffn.towers.text.up.weight"], source.blocks[0].ffn.towers["text"].up.weight)


@pytest.mark.parametrize("source_overrides, towers, message", [
    (dict(d_model=64), {}, r"model.d_model=32 but the source has 64"),
    (dict(norm_placement="pre"), {}, r"model.norm_placement='post' but the source has 'pre'"),
    (dict(), {"image": "vision"}, r"init.towers.image='vision': the source has no tower 'vision'"),
    (dict(modalities=["text", "speech"]), {}, r"tower 'image': the source has no tower of that name"),
    (dict(moe={"towers": ["image"]}), {}, r"ffn.towers.image.*differ in kind"),
])
def test_weights_that_do_not_fit_are_refused_naming_why(source_overrides, towers, message):
    source = build_model(tiny_config(**source_overrides))
    target = build_model(tiny_config())
    with pytest.raises(ConfigError, match=message):
        warm_state(target, source.config, source.state_dict(), torch.arange(97), towers)


def test_a_vocabulary_clash_is_refused(small_corpus, dense_run, tmp_path):
    other = VocabLayout({"text": 7, "image": 1000})
    config = mot_config(small_corpus, tmp_path)
    model = build_model(dataclasses.replace(config.model, vocab_size=other.vocab_size))
    with pytest.raises(ConfigError, match="vocabulary clash.*text has"):
        warm_start(model, InitConfig(source=str(dense_run)), other, log=quiet)
    with pytest.raises(ConfigError, match="the model has vocab_size=.* but the vocabulary it is for has 1012 ids"):
        warm_start(build_model(config.model), InitConfig(source=str(dense_run)), other, log=quiet)


def test_an_init_the_recipe_cannot_use_is_refused_before_training(small_corpus, dense_run, tmp_path):
    with pytest.raises(ConfigError, match=r"init.towers names \['vision'\]"):
        Trainer(small_recipe(small_corpus, tmp_path, **{"init.source": str(dense_run), "init.towers": "{vision: text}"}),
                log=quiet)
    with pytest.raises(ConfigError, match="no such directory"):
        Trainer(small_recipe(small_corpus, tmp_path, **{"init.source": str(tmp_path / "nowhere")}), log=quiet)
    with pytest.raises(ConfigError, match="init.towers=.*without init.source"):
        small_recipe(small_corpus, tmp_path, **{"init.towers": "{image: text}"})
    assert not (tmp_path / "run").exists()


def test_pickled_weights_are_never_unpickled(small_corpus, tmp_path, monkeypatch):
    source = tmp_path / "llama"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "llama", "hidden_size": 32}')
    (source / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    config = mot_config(small_corpus, tmp_path)
    with pytest.raises(Exception, match="(?i)pickle"):
        warm_start(build_model(config.model), InitConfig(source=str(source)),
                   open_corpus(small_corpus).layout("chameleon"), log=quiet)


def saved_llama(directory, vocab=61):
    """:func:`tests.helpers.random_llama` of the small recipes' shape (32 wide, 4 heads, 2 key/value
    heads), saved as safetensors."""
    pytest.importorskip("transformers")
    llama = random_llama(vocab_size=vocab, hidden_size=32, intermediate_size=48, max_position_embeddings=128,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    llama.save_pretrained(directory)
    return llama


def test_a_llama_fills_the_text_tower_and_an_image_tower_leaves_its_text_logits_alone(tmp_path):
    llama = saved_llama(tmp_path / "llama")
    layout = VocabLayout({"text": 61, "image": 12})
    fields = dict(vocab_size=layout.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48,
                  norm_placement="pre", norm_type="rmsnorm", qk_norm=False, max_seq_len=128)
    text_layout = VocabLayout({"text": 61})
    text_tower = build_model(tiny_config(**{**fields, "vocab_size": text_layout.vocab_size}, modalities=["text"]))
    warm_start(text_tower, InitConfig(source=str(tmp_path / "llama")), text_layout, log=quiet)
    mot = build_model(tiny_config(**fields))  # text + image, the image tower copied from the Llama too
    warm_start(mot, InitConfig(source=str(tmp_path / "llama")), layout, log=quiet)
    fresh_image = build_model(tiny_config(**fields))
    warm_start(fresh_image, InitConfig(source=str(tmp_path / "llama"), towers={"image": "fresh"}), layout, log=quiet)
    ids = torch.randint(0, 61, (2, 33))
    with torch.no_grad():
        theirs = llama(input_ids=ids).logits
        start, stop = text_layout.id_range("text")  # mot's specials come first: Llama id i is mot id start + i
        ours = text_tower.eval()(ids + start, torch.zeros_like(ids)).logits[..., start:stop]
        assert (ours - theirs).abs().max().item() <= 1e-4
        start, stop = layout.id_range("text")
        for model in (mot, fresh_image):
            with_image = model.eval()(ids + start, torch.zeros_like(ids)).logits[..., start:stop]
            assert torch.equal(with_image, ours)


def test_a_llama_that_does_not_fit_is_refused(tmp_path):
    saved_llama(tmp_path / "llama", vocab=61)
    clash = VocabLayout({"text": 60, "image": 12})
    model = build_model(tiny_config(vocab_size=clash.vocab_size, d_model=32, n_heads=4, n_kv_heads=2, ffn_hidden=48,
                                    norm_placement="pre", qk_norm=False))
    with pytest.raises(ConfigError, match="vocabulary clash.*61 token ids.*has 60"):
        warm_start(model, InitConfig(source=str(tmp_path / "llama")), clash, log=quiet)
    wide = build_model(tiny_config(vocab_size=78, d_model=64, n_heads=4, n_kv_heads=2, ffn_hidden=48,
                                   norm_placement="pre", qk_norm=False))
    with pytest.raises(ConfigError, match="model.d_model=64 but the source has 32"):
        warm_start(wide, InitConfig(source=str(tmp_path / "llama")), VocabLayout({"text": 61, "image": 12}), log=quiet)


@pytest.mark.parametrize("architecture", ["dense", "mot"])
def test_a_model_exported_for_hugging_face_is_a_source_like_its_run(small_corpus, dense_run, tmp_path, architecture):
    """``mot export --format hf`` keeps the vocabulary layout, so the export maps token rows as its run
    does (a pre-norm dense model is exported as a plain Llama that still carries mot's config)."""
    from mot.interop.hf_export import export_hf

    source = build_model(mot_config(small_corpus, tmp_path, architecture=architecture,
                                    **{"model.norm_placement": "pre", "model.qk_norm": False}).model)
    layout = open_corpus(small_corpus).layout("chameleon")
    export_hf(source, tmp_path / "hf", layout=layout)
    config = mot_config(small_corpus, tmp_path, **{"model.norm_placement": "pre", "model.qk_norm": False})
    target = build_model(config.model)
    warm_start(target, InitConfig(source=str(tmp_path / "hf")), layout, log=quiet)
    assert torch.equal(target.embed.weight, source.embed.weight)
    tower = "shared" if architecture == "dense" else "image"
    assert torch.equal(target.blocks[0].ffn.towers["image"].up.weight, source.blocks[0].ffn.towers[tower].up.weight)


def sentencepiece_style_tokenizer(path):
    """A Llama-2-style tokenizer.json (Metaspace BPE with <unk>, <s>, </s>), made offline."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=180, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=list(string.printable.strip()), show_progress=False)
    tokenizer.train_from_iterator(["a red circle above a small blue square on a green background"] * 20, trainer)
    tokenizer.save(str(path))
    return tokenizer.get_vocab_size()


def test_a_corpus_in_a_llamas_ids_trains_from_the_llama(tmp_path):
    """mot prepare with the Llama's tokenizer, then a MoT warm-started from the Llama: the run's first
    weights give the Llama's logits on the corpus's own text."""
    from tests.helpers import prepare_small_corpus

    vocab = sentencepiece_style_tokenizer(tmp_path / "tokenizer.json")
    llama = saved_llama(tmp_path / "llama", vocab=vocab)
    corpus = prepare_small_corpus(tmp_path / "corpus", text_tokenizer=str(tmp_path / "tokenizer.json"))
    recipe = small_recipe(corpus, tmp_path / "runs", architecture="mot", **{
        "init.source": str(tmp_path / "llama"), "init.towers": "{image: fresh}", "model.n_kv_heads": 2,
        "model.ffn_hidden": 48, "model.norm_placement": "pre", "model.qk_norm": False})
    trainer = Trainer(recipe, log=quiet)
    batch = next(trainer.loader)
    text = batch.modality_ids[0] == 0
    tokens = batch.tokens[0][text][:30].unsqueeze(0)  # the first text tokens of a packed row
    start, stop = trainer.layout.id_range("text")
    tokens = tokens[(tokens >= start) & (tokens < stop)].unsqueeze(0)
    with torch.no_grad():
        ours = trainer.model.eval()(tokens, torch.zeros_like(tokens)).logits[..., start:stop]
        theirs = llama(input_ids=tokens - start).logits
    assert tokens.shape[1] > 5 and (ours - theirs).abs().max().item() <= 1e-4
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(Exception, match="text_tokenizer=.*corrupt"):
        prepare_small_corpus(tmp_path / "other", text_tokenizer=str(bad))
