"""Save/load in the release form (config.json + model.safetensors + checksums.json)."""

import json
import re

import pytest
import torch

from mot.io import CheckpointError
from mot.io import sha256_file
from mot.model import MoTModel, build_model

from tests.helpers import random_batch, tiny_config


@pytest.mark.parametrize("overrides", [dict(), dict(modalities=["text", "image", "speech"], moe={"towers": ["text"]}),
                                       dict(towers={"text": "shared", "image": "shared"}, norm_type="layernorm")])
def test_save_then_load_gives_identical_outputs(tmp_path, overrides):
    model = build_model(tiny_config(**overrides))
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checksums.json", "config.json", "model.safetensors"]
    loaded = MoTModel.from_pretrained(tmp_path)
    assert loaded.config == model.config
    tokens, modalities = random_batch(model.config, seed=20)
    with torch.no_grad():
        assert torch.equal(loaded(tokens, modalities).logits, model(tokens, modalities).logits)


def test_tensor_names_identify_the_tower(tmp_path):
    from safetensors import safe_open

    build_model(tiny_config()).save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "blocks.1.attention.qkv.towers.image.weight" in names
    assert "blocks.0.ffn.towers.text.down.weight" in names
    assert "final_norm.towers.image.weight" in names


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="config.json does not exist"):
        MoTModel.from_pretrained(tmp_path / "nowhere")


def test_truncated_weights_are_reported(tmp_path):
    build_model(tiny_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        MoTModel.from_pretrained(tmp_path)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    build_model(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["towers"] = {"text": "shared", "image": "shared"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"does not match the architecture.*missing: .*towers\.shared"):
        MoTModel.from_pretrained(tmp_path)


def test_invalid_config_file_names_the_field(tmp_path):
    build_model(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_heads"] = 5
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="d_model=32: must be divisible by n_heads=5"):
        MoTModel.from_pretrained(tmp_path)


def test_a_failed_save_leaves_the_previous_files_intact(tmp_path, monkeypatch):
    model = build_model(tiny_config())
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken_save)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checksums.json", "config.json", "model.safetensors"]
    MoTModel.from_pretrained(tmp_path)  # the previous checksums still vouch for the previous weights


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checksums_record_the_size_and_sha256_of_the_weights(tmp_path):
    build_model(tiny_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    recorded = json.loads((tmp_path / "checksums.json").read_text())
    assert recorded == {"format": 1, "files": {"model.safetensors": {"bytes": weights.stat().st_size,
                                                                     "sha256": sha256_file(weights)}}}


def test_a_changed_byte_in_the_tensor_data_is_refused_naming_the_file(tmp_path):
    model = build_model(tiny_config())
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    flip_byte(weights, weights.stat().st_size - 3)  # in the last tensor's data, past the header
    with pytest.raises(CheckpointError, match=re.escape(f"{weights} is corrupt or was changed after saving")
                       + r".*restore it from a good copy.*verify=False"):
        MoTModel.from_pretrained(tmp_path)
    edited = MoTModel.from_pretrained(tmp_path, verify=False)  # the opt-out for weights changed on purpose
    changed = [name for name, tensor in model.state_dict().items() if not torch.equal(tensor, edited.state_dict()[name])]
    assert len(changed) == 1


def test_a_truncated_file_is_refused_by_its_recorded_size(tmp_path):
    build_model(tiny_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match=re.escape(f"{weights} is corrupt or truncated: it has {size - 1} "
                                                        f"bytes, checksums.json records {size}")):
        MoTModel.from_pretrained(tmp_path)


def test_weights_saved_without_checksums_say_how_to_load_them(tmp_path):
    model = build_model(tiny_config())
    model.save_pretrained(tmp_path)
    (tmp_path / "checksums.json").unlink()  # as saved by mot before it recorded checksums
    with pytest.raises(CheckpointError, match=r"checksums.json does not exist, so .*model.safetensors cannot be "
                                              r"checked.*load them with .*verify=False\) and save them again"):
        MoTModel.from_pretrained(tmp_path)
    loaded = MoTModel.from_pretrained(tmp_path, verify=False)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    loaded.save_pretrained(tmp_path)
    MoTModel.from_pretrained(tmp_path)
