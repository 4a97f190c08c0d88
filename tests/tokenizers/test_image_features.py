"""The image feature network: what it learns of rendered ShapeScenes, its readers (features,
predict, scene_attributes), determinism, and save/load/fingerprint like every saved tokenizer."""

import json

import numpy as np
import pytest
import torch

from mot.config import ConfigError
from mot.data.prepare.evaluation_sets import HEAD_CLASSES, labels_of
from mot.data.sources.shapescenes import shapescenes
from mot.io.weights import CheckpointError
from mot.tokenizers.image_features import (SCENE_HEADS, FeatureTraining, ImageFeatureConfig, ImageFeatureNet,
                                           feature_accuracy, fit_image_features)

QUIET = dict(log=lambda _: None)
SMALL_NET = ImageFeatureConfig(widths=(8, 16, 16), feature_dim=32)


def rendered(count, start=0):
    documents = list(shapescenes(count, seed=0, start=start))
    return np.stack([d.segments[0].array for d in documents]), [labels_of(d) for d in documents]


@pytest.fixture(scope="module")
def scenes():
    return rendered(600), rendered(200, start=600)


@pytest.fixture(scope="module")
def net(scenes, one_thread):
    (images, labels), _ = scenes
    return fit_image_features(images, labels, FeatureTraining(steps=120, batch_size=64), **QUIET,
                              classes={**HEAD_CLASSES, "source": ["shapescenes"]})


def test_a_short_training_reads_scenes_far_better_than_chance(net, scenes):
    _, (images, labels) = scenes
    accuracy = feature_accuracy(net, images, labels)
    assert set(accuracy) == {"source", *SCENE_HEADS, "shapescenes_all"}
    # chance: 1/2 count, 1/9 background, 1/8 colour
    assert accuracy["count"] > 0.75 and accuracy["background"] > 0.8 and accuracy["colour_1"] > 0.4, accuracy


def test_the_readers_agree_with_forward_and_with_each_other(net, scenes):
    _, (images, _) = scenes
    features = net.features(images)
    assert features.shape == (200, net.num_features) and features.dtype == torch.float32
    with torch.no_grad():
        direct = net(torch.from_numpy(images).permute(0, 3, 1, 2))  # uint8 [N, 3, S, S], as torchmetrics passes
    torch.testing.assert_close(direct, features)
    assert torch.equal(net.features(images), features)  # deterministic
    predicted, records = net.predict(images[:20]), net.scene_attributes(images[:20])
    assert all(set(p) == {"source", *SCENE_HEADS} for p in predicted)
    for p, record in zip(predicted, records):
        assert set(record) == {"count", "background", "axis", "objects"}
        assert record["count"] == len(record["objects"]) in (1, 2)
        assert (record["axis"] is None) == (record["count"] == 1) and record["axis"] != "none"
        assert record["background"] == p["background"] and record["objects"][0]["colour"] == p["colour_1"]
        assert all(value != "none" for obj in record["objects"] for value in obj.values())


def test_forward_refuses_images_of_another_shape(net):
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        net(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))


def test_training_is_deterministic_for_a_seed(scenes, one_thread):
    (images, labels), _ = scenes
    first, again, other = (fit_image_features(images[:64], labels[:64], FeatureTraining(steps=3, seed=seed),
                                              config=SMALL_NET, **QUIET) for seed in (0, 0, 1))
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert not torch.equal(first.project[0].weight, other.project[0].weight)


def test_heads_are_the_labels_and_a_missing_label_costs_nothing(one_thread):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    labels = [{"source": "a", "digit": str(i % 3)} if i % 2 else {"source": "b"} for i in range(8)]
    net = fit_image_features(images, labels, FeatureTraining(steps=2), config=SMALL_NET, **QUIET)
    assert net.config.head_classes == {"source": ("a", "b"), "digit": ("0", "1", "2")}
    assert net.config.image_size == 16 and all(torch.isfinite(p).all() for p in net.parameters())
    assert set(feature_accuracy(net, images, labels)) == {"source", "digit"}
    with pytest.raises(ValueError, match="no ShapeScenes head"):
        net.scene_attributes(images)
    with pytest.raises(ValueError, match=r"head 'digit' include \['7'\]"):
        fit_image_features(images, [{"digit": "7"}] * 8, classes={"digit": ["0", "1"]}, **QUIET)
    with pytest.raises(ValueError, match="uint8"):
        fit_image_features(images.astype(np.float32), labels, **QUIET)


def test_save_load_and_fingerprint(net, scenes, tmp_path):
    _, (images, _) = scenes
    directory = net.save(tmp_path / "features")
    loaded = ImageFeatureNet.load(directory)
    assert loaded.config == net.config and loaded.fingerprint() == net.fingerprint()
    assert loaded.config.head_classes["colour_2"][0] == "none"  # the class lists survive JSON as tuples
    assert torch.equal(loaded.features(images), net.features(images))
    assert loaded.predict(images[:5]) == net.predict(images[:5])
    trained_elsewhere = fit_image_features(images[:32], [{"source": "x"}] * 32, FeatureTraining(steps=1),
                                           config=SMALL_NET, **QUIET)
    assert trained_elsewhere.fingerprint() != net.fingerprint()


def test_a_tampered_or_wrong_kind_file_is_refused(net, tmp_path):
    directory = net.save(tmp_path / "features")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        ImageFeatureNet.load(directory)
    directory = net.save(tmp_path / "wrong_kind")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "kind": "image_vq"}))
    with pytest.raises(CheckpointError, match="kind='image_vq': expected 'image_features'"):
        ImageFeatureNet.load(directory)


@pytest.mark.parametrize("fields, message", [
    (dict(heads=("a", "b"), classes=(("x", "y"),)), "heads="),
    (dict(heads=("a",), classes=(("x", "x"),)), "classes of head 'a'"),
    (dict(image_size=30), "image_size=30"),
    (dict(feature_dim=0), "feature_dim=0"),
])
def test_a_bad_config_is_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        ImageFeatureConfig(**fields)


def test_bad_training_settings_are_refused():
    with pytest.raises(ConfigError, match="steps=0"):
        FeatureTraining(steps=0)
    with pytest.raises(ConfigError, match="lr=nan"):
        FeatureTraining(lr=float("nan"))
