"""The image tokenizers' saved weights are checked against ``checksums.json`` when loaded:
a changed byte or a truncated file is refused with the file named, ``verify=False`` loads it."""

import re

import pytest
import torch

from mot.io import CheckpointError
from mot.tokenizers.fingerprint import fingerprint
from mot.tokenizers.image_vae import ImageVAE, ImageVAEConfig
from mot.tokenizers.image_vq import ImageVQ, ImageVQConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENIZERS = [pytest.param(ImageVQ, ImageVQConfig(width=8), id="vq"),
              pytest.param(ImageVAE, ImageVAEConfig(width=8), id="vae")]


def saved(model_cls, config, directory):
    model = model_cls(config)
    model.save(directory)
    return model, directory / "model.safetensors"


def assert_same_weights(a, b):
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name


@pytest.mark.parametrize("model_cls, config", TOKENIZERS)
def test_round_trip_is_exact_and_the_fingerprint_covers_what_is_saved(model_cls, config, tmp_path):
    model, _ = saved(model_cls, config, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checksums.json", "config.json", "model.safetensors"]
    loaded = model_cls.load(tmp_path)
    assert_same_weights(model, loaded)
    assert fingerprint(tmp_path) == model.fingerprint() == loaded.fingerprint()


@pytest.mark.parametrize("model_cls, config", TOKENIZERS)
def test_a_changed_byte_in_the_tensor_data_is_refused_naming_the_file(model_cls, config, tmp_path):
    model, weights = saved(model_cls, config, tmp_path)
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # in the last tensor's data, past the header
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=re.escape(f"{weights} is corrupt or was changed after saving")
                       + rf".*{model_cls.__name__}\.load\(.*verify=False\)"):
        model_cls.load(tmp_path)
    edited = model_cls.load(tmp_path, verify=False)  # the opt-out for weights changed on purpose
    changed = [n for n, t in model.state_dict().items() if not torch.equal(t, edited.state_dict()[n])]
    assert len(changed) == 1


@pytest.mark.parametrize("model_cls, config", TOKENIZERS)
def test_a_truncated_file_is_refused(model_cls, config, tmp_path):
    _, weights = saved(model_cls, config, tmp_path)
    weights.write_bytes(weights.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match=re.escape(f"{weights} is corrupt or truncated: it has")
                       + r".*checksums\.json records"):
        model_cls.load(tmp_path)


@pytest.mark.parametrize("model_cls, config", TOKENIZERS)
def test_a_tokenizer_saved_without_checksums_says_how_to_load_it(model_cls, config, tmp_path):
    model, _ = saved(model_cls, config, tmp_path)
    (tmp_path / "checksums.json").unlink()  # as saved by mot before it recorded checksums
    with pytest.raises(CheckpointError, match=r"checksums\.json does not exist.*"
                                              rf"{model_cls.__name__}\.load\(.*verify=False\) and save them again"):
        model_cls.load(tmp_path)
    assert_same_weights(model, model_cls.load(tmp_path, verify=False))
