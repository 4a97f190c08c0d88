"""Hugging Face Llama checkpoints read as mot models (logits equal), and what mot cannot represent
refused by name; pickled weights are refused without being read."""

import json

import pytest
import torch

from mot.config import ConfigError
from mot.interop.llama import (check_fits_model, check_llama_fits, llama_model_fields, llama_to_mot,
                               mot_to_llama, read_llama)
from mot.io import CheckpointError
from mot.model import build_model

from tests.helpers import random_llama, small_llama_config, tiny_config

transformers = pytest.importorskip("transformers")


def max_logit_difference(llama, model, length=29):
    tokens = torch.randint(0, llama.config.vocab_size, (2, length))
    with torch.no_grad():
        theirs = llama(input_ids=tokens).logits
        ours = model(tokens, torch.zeros_like(tokens)).logits
    return (ours - theirs).abs().max().item()


@pytest.mark.parametrize("tied", [False, True])
def test_a_saved_llama_reads_as_a_mot_model_with_its_logits(tmp_path, tied):
    llama = random_llama(tie_word_embeddings=tied)
    llama.save_pretrained(tmp_path)
    model = llama_to_mot(tmp_path)
    assert model.config.modalities == ["text"] and model.config.vocab_size == 101
    assert model.config.norm_placement == "pre" and not model.config.qk_norm and model.config.rope_theta == 500.0
    assert max_logit_difference(llama, model) <= 1e-4
    if tied:  # one matrix in the Llama, two weights in mot: the head is a copy
        assert torch.equal(model.head.weight, model.embed.weight)
        assert model.head.weight.data_ptr() != model.embed.weight.data_ptr()


def test_a_sharded_llama_reads_like_a_single_file(tmp_path):
    llama = random_llama()
    llama.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    _, state = read_llama(tmp_path)
    assert state.keys() == llama.state_dict().keys()
    assert max_logit_difference(llama, llama_to_mot(tmp_path)) <= 1e-4


def test_a_llama_shaped_mot_model_becomes_an_equal_llama():
    """The reverse mapping, in memory (tests/interop/test_hf_export.py goes through files)."""
    config = tiny_config(towers={"text": "shared", "image": "shared"}, norm_placement="pre", qk_norm=False,
                         n_kv_heads=2, rope_theta=500.0, init_std=0.1)
    model = build_model(config).eval()
    hf_config, state = mot_to_llama(model)
    llama = transformers.LlamaForCausalLM(hf_config).eval()
    llama.load_state_dict(state, strict=True)
    assert max_logit_difference(llama, model) <= 1e-5
    assert hf_config.mot == config.to_dict()


def test_a_mot_model_that_is_no_llama_is_refused_by_what_differs():
    with pytest.raises(ConfigError, match=r"not a Llama: towers \['text', 'image'\].*norm_placement='post'.*"
                                          r"qk_norm=True"):
        mot_to_llama(build_model(tiny_config()))
    dense_moe = tiny_config(towers={"text": "shared", "image": "shared"}, norm_placement="pre", qk_norm=False,
                            moe={"towers": ["shared"]})
    with pytest.raises(ConfigError, match=r"moe.towers=\['shared'\]"):
        mot_to_llama(build_model(dense_moe))


def test_model_fields_and_a_model_that_does_not_fit():
    fields = llama_model_fields(small_llama_config())
    assert fields == dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96, max_seq_len=64,
                          rope_theta=500.0, norm_eps=1e-5, norm_type="rmsnorm", norm_placement="pre", qk_norm=False)
    hf_config = small_llama_config()
    hf_config.name_or_path = "/somewhere/llama"
    fitting = tiny_config(**fields, vocab_size=300)  # another vocabulary and modalities still fit
    check_fits_model(hf_config, fitting)
    with pytest.raises(ConfigError) as error:
        check_fits_model(hf_config, tiny_config(**{**fields, "d_model": 128, "qk_norm": True, "ffn_hidden": None}))
    message = str(error.value)
    assert "model.d_model=128 but the Llama at /somewhere/llama has hidden_size=64" in message
    assert "model.qk_norm=True" in message and "model.ffn_hidden=None (" in message
    assert "n_layers" not in message


@pytest.mark.parametrize("overrides, named", [
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 32}), "rope_type='llama3'"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 32}, rope_theta=5e5), "rope_type='llama3'"),
    (dict(head_dim=32), "head_dim=32"),
    (dict(attention_bias=True), "attention_bias=True"),
    (dict(mlp_bias=True), "mlp_bias=True"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
])
def test_what_mot_cannot_represent_is_refused_by_name(overrides, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace("[", r"\[")):
        check_llama_fits(small_llama_config(**overrides))


def test_other_architectures_are_refused_by_their_model_type(tmp_path):
    with pytest.raises(ConfigError, match="sliding_window=4096"):
        check_llama_fits(transformers.MistralConfig(hidden_size=64, num_attention_heads=4, sliding_window=4096))
    check_llama_fits(transformers.MistralConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                                head_dim=16, sliding_window=None))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="model_type='qwen2'"):
        read_llama(tmp_path)


def test_a_rope_scaled_llama_on_disk_is_refused_before_its_weights_are_read(tmp_path):
    llama = random_llama()
    llama.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"not read")
    with pytest.raises(ConfigError, match=f"rope_type='linear'.*at the Llama at {tmp_path}"):
        llama_to_mot(tmp_path)


def test_pickled_weights_are_refused_and_never_unpickled(tmp_path, monkeypatch):
    llama = random_llama()
    llama.config.save_pretrained(tmp_path)
    torch.save(llama.state_dict(), tmp_path / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(CheckpointError, match=r"holds only pickled weights \(pytorch_model.bin\).*never unpickles.*"
                                              r"safetensors"):
        llama_to_mot(tmp_path)


def test_missing_and_damaged_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="model.safetensors does not exist"):
        read_llama(tmp_path)
    llama = random_llama()
    llama.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"{weights} is corrupt or truncated"):
        read_llama(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json does not exist"):
        read_llama(tmp_path)
