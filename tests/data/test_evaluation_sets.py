"""The evaluation stage of `mot prepare`: held-out real images with their captions and labels, the
image feature network trained on the train split, both resumable, and the reader's errors."""

import json
import shutil

import numpy as np
import pytest

from mot.data.documents import Document, ImageSegment
from mot.data.prepare import PrepareConfig, PrepareError, prepare
from mot.data.prepare.evaluation_sets import labels_of, read_evaluation_set
from mot.data.sources.images import digits
from mot.data.sources.shapescene_attributes import caption_attributes
from mot.data.sources.shapescenes import shapescenes
from mot.tokenizers.image_features import ImageFeatureNet

from tests.helpers import SMALL_CORPUS

SMALL = dict(SMALL_CORPUS, shapescenes=40, digits=12, image_tokenizers=["vq"], shapescenes_heldout=6,
             feature_steps=4)
SETS = {"shapescenes-valid": 8, "digits-valid": 2, "shapescenes-heldout": 6}


def _prepare(out, **overrides):
    manifest = prepare(PrepareConfig(out_dir=str(out), **{**SMALL, **overrides}), log=lambda _: None)
    return json.loads(manifest.read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return out, _prepare(out)


def test_every_held_out_split_of_every_captioned_source_is_written(corpus):
    out, manifest = corpus
    listed = {f"{e['source']}-{e['split']}": e for e in manifest["evaluation"]}
    assert {name: e["count"] for name, e in listed.items()} == SETS
    for name, count in SETS.items():
        assert listed[name]["path"] == f"evaluation/{name}.npz"
        source, split = name.split("-")
        found = read_evaluation_set(out, source, split)
        assert found.images.dtype == np.uint8 and found.images.shape == (count, 32, 32, 3)
        assert len(found.captions) == len(found.labels) == count and all(len(c) == 4 for c in found.captions)
        assert all(label["source"] == source for label in found.labels)
    scenes = read_evaluation_set(out, "shapescenes", "heldout")
    for captions, label in zip(scenes.captions, scenes.labels):  # the labels are the captions' attributes
        record = caption_attributes(captions[0])
        assert label["background"] == record["background"] and label["count"] == str(record["count"])
        assert label["colour_1"] == record["objects"][0]["colour"]
    assert all(label["digit"].isdigit() for label in read_evaluation_set(out, "digits", "valid").labels)


def test_the_feature_network_is_saved_recorded_and_measured(corpus):
    out, manifest = corpus
    entry = manifest["tokenizers"]["image_features"]
    net = ImageFeatureNet.load(out / "tokenizers" / "image_features")
    assert entry["fingerprint"] == net.fingerprint()
    assert entry == json.loads((out / "tokenizers" / "image_features.json").read_text())
    assert entry["steps"] == 4 and entry["train_images"] == 32 + 10
    assert set(entry["accuracy"]) == {"valid", "heldout"}
    assert {"source", "background", "colour_1", "digit", "shapescenes_all"} <= set(entry["accuracy"]["valid"])
    assert net.config.head_classes["source"] == ("digits", "shapescenes")
    assert len(net.config.head_classes["background"]) == 9  # every class, seen in training or not


def test_a_rerun_reuses_the_sets_and_the_network(corpus):
    out, manifest = corpus
    files = [out / "tokenizers" / "image_features" / "model.safetensors", out / "evaluation" / "digits-valid.npz"]
    before = [path.stat().st_mtime_ns for path in files]
    again = _prepare(out)
    assert [path.stat().st_mtime_ns for path in files] == before
    assert again["evaluation"] == manifest["evaluation"] and again["tokenizers"] == manifest["tokenizers"]


def test_a_corpus_prepared_before_the_stage_gains_it_on_a_rerun(tmp_path):
    manifest = _prepare(tmp_path, digits=0, shapescenes_heldout=0, feature_steps=2)
    shutil.rmtree(tmp_path / "evaluation")
    shutil.rmtree(tmp_path / "tokenizers" / "image_features")
    (tmp_path / "tokenizers" / "image_features.json").unlink()
    record = tmp_path / "prepare_config.json"
    old = json.loads(record.read_text())
    del old["feature_steps"]
    record.write_text(json.dumps(old))
    with pytest.raises(PrepareError, match=r"shapescenes-valid.npz does not exist.*Rerunning `mot prepare`"):
        read_evaluation_set(tmp_path, "shapescenes", "valid")
    upgraded = _prepare(tmp_path, digits=0, shapescenes_heldout=0, feature_steps=2)
    assert upgraded["evaluation"] == manifest["evaluation"]
    fingerprints = [m["tokenizers"]["image_features"]["fingerprint"] for m in (manifest, upgraded)]
    assert fingerprints[0] == fingerprints[1]  # trained again, the same: seeded
    assert read_evaluation_set(tmp_path, "shapescenes", "valid").images.shape == (8, 32, 32, 3)


def test_without_feature_steps_there_is_no_network_but_still_the_sets(tmp_path):
    manifest = _prepare(tmp_path, shapescenes=10, digits=0, shapescenes_heldout=0, feature_steps=0)
    assert "image_features" not in manifest["tokenizers"] and not (tmp_path / "tokenizers" / "image_features").exists()
    assert [e["path"] for e in manifest["evaluation"]] == ["evaluation/shapescenes-valid.npz"]


def test_a_missing_or_broken_set_is_named(corpus, tmp_path):
    out, _ = corpus
    with pytest.raises(PrepareError, match=r"emoji-valid.npz does not exist.*no evaluation set emoji-valid"):
        read_evaluation_set(out, "emoji", "valid")
    broken = tmp_path / "evaluation" / "digits-valid.npz"
    broken.parent.mkdir()
    broken.write_bytes((out / "evaluation" / "digits-valid.npz").read_bytes()[:100])
    with pytest.raises(PrepareError, match="digits-valid.npz is not a complete evaluation set"):
        read_evaluation_set(tmp_path, "digits", "valid")


def test_labels_of_documents():
    one, two = (next(d for d in shapescenes(20, seed=0, size=8) if len(d.meta["objects"]) == n) for n in (1, 2))
    assert labels_of(one)["count"] == "1" and labels_of(one)["axis"] == "none"
    assert {labels_of(one)[f"{a}_2"] for a in ("colour", "shape", "size")} == {"none"}
    assert labels_of(two)["axis"] in ("horizontal", "vertical") and labels_of(two)["shape_2"] != "none"
    assert labels_of(next(digits(size=8, limit=1))) == {"source": "digits", "digit": "0"}
    image = (ImageSegment(array=np.zeros((8, 8, 3), np.uint8)),)
    assert labels_of(Document("f", image, {"source": "fashion-mnist", "label": 9})) == {
        "source": "fashion_mnist", "fashion": "ankle boot"}
    assert labels_of(Document("e", image, {"source": "noto-color-emoji"})) == {"source": "emoji"}
    assert labels_of(Document("u", image), source="mine") == {"source": "mine"}
    assert labels_of(Document("u", image)) == {}
