"""ShapeScenes: determinism, captions that match the attributes, valid geometry, held-out pairs."""

import numpy as np
import pytest

from mot.data.jsonl import read_jsonl, write_jsonl
from mot.data.sources.shapescenes import (BACKGROUNDS, COLOURS, HELDOUT_PAIRS, RELATION_PHRASES,
                                          INVERSE_RELATION, SHAPES, SIZES, render_scene,
                                          sample_scene, shapescenes)


@pytest.fixture(scope="module")
def train_docs():
    return list(shapescenes(400, seed=7))


@pytest.fixture(scope="module")
def heldout_docs():
    return list(shapescenes(200, seed=7, split="heldout"))


def test_same_seed_gives_identical_bytes(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", shapescenes(60, seed=3))
    write_jsonl(tmp_path / "b.jsonl", shapescenes(60, seed=3))
    write_jsonl(tmp_path / "c.jsonl", shapescenes(60, seed=4))
    first = (tmp_path / "a.jsonl").read_bytes()
    assert first == (tmp_path / "b.jsonl").read_bytes()
    assert first != (tmp_path / "c.jsonl").read_bytes()
    assert list(read_jsonl(tmp_path / "a.jsonl")) == list(shapescenes(60, seed=3))


def test_a_scene_depends_only_on_seed_split_and_index():
    whole = list(shapescenes(12, seed=5))
    assert list(shapescenes(4, seed=5, start=8)) == whole[8:]
    assert sample_scene(5, 3, "train") != sample_scene(5, 3, "heldout")


def test_documents_hold_the_image_then_three_or_more_captions(train_docs):
    ids = {doc.id for doc in train_docs}
    assert len(ids) == len(train_docs)
    for doc in train_docs[:20]:
        image, *captions = doc.segments
        assert image.kind == "image" and image.array.shape == (32, 32, 3)
        assert image.array.dtype == np.uint8
        assert len(captions) >= 3 and all(c.kind == "text" for c in captions)
        assert len({c.text for c in captions}) == len(captions)
    assert next(shapescenes(1, size=64)).segments[0].array.shape == (64, 64, 3)


def test_captions_name_every_attribute_in_meta(train_docs, heldout_docs):
    for doc in train_docs + heldout_docs:
        meta = doc.meta
        objects = meta["objects"]
        for caption in (segment.text for segment in doc.segments[1:]):
            for obj in objects:
                assert f"{obj['size']} {obj['colour']} {obj['shape']}" in caption, (doc.id, caption)
            assert f"{meta['background']} background" in caption
            if meta["relation"] is not None:
                phrases = (RELATION_PHRASES[meta["relation"]],
                           RELATION_PHRASES[INVERSE_RELATION[meta["relation"]]])
                assert any(f" {p} a " in caption or caption.endswith(f"{p} it") for p in phrases)
    # Every attribute value occurs, and one- and two-object scenes both occur.
    objects = [obj for doc in train_docs for obj in doc.meta["objects"]]
    assert {obj["shape"] for obj in objects} == set(SHAPES)
    assert {obj["colour"] for obj in objects} == set(COLOURS)
    assert {obj["size"] for obj in objects} == set(SIZES)
    assert {len(doc.meta["objects"]) for doc in train_docs} == {1, 2}
    assert {doc.meta["background"] for doc in train_docs} == set(BACKGROUNDS)


def test_background_differs_from_every_object_and_both_are_drawn(train_docs):
    for doc in train_docs:
        pixels = doc.segments[0].array.reshape(-1, 3)
        background = doc.meta["background"]
        assert background not in {obj["colour"] for obj in doc.meta["objects"]}
        # The background fills the corners; each object has at least one pixel of pure colour.
        assert pixels[0].tolist() == list(BACKGROUNDS[background])
        for obj in doc.meta["objects"]:
            assert (pixels == COLOURS[obj["colour"]]).all(axis=1).any(), (doc.id, obj)


def test_two_objects_stand_in_the_stated_relation_without_overlap(train_docs):
    for doc in train_docs:
        if doc.meta["relation"] is None:
            continue
        first, second = doc.meta["objects"]
        dx, dy = first["x"] - second["x"], first["y"] - second["y"]
        expected = {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}
        assert expected[doc.meta["relation"]]
        # Separated along the relation's axis by more than both (star-tip) radii together.
        axis = abs(dx) if doc.meta["relation"] in ("left of", "right of") else abs(dy)
        assert axis > 1.1 * (SIZES[first["size"]] + SIZES[second["size"]])


def test_heldout_pairs_never_occur_in_train_and_always_in_heldout(train_docs, heldout_docs):
    def pairs(doc):
        return {(obj["colour"], obj["shape"]) for obj in doc.meta["objects"]}

    assert not any(pairs(doc) & HELDOUT_PAIRS for doc in train_docs)
    assert all(pairs(doc) & HELDOUT_PAIRS for doc in heldout_docs)
    seen_in_heldout = set().union(*(pairs(doc) for doc in heldout_docs)) & HELDOUT_PAIRS
    assert seen_in_heldout == HELDOUT_PAIRS
    # Each held-out colour and shape is still seen in train, with other partners.
    train_objects = [obj for doc in train_docs for obj in doc.meta["objects"]]
    for colour, shape in HELDOUT_PAIRS:
        assert any(obj["colour"] == colour for obj in train_objects)
        assert any(obj["shape"] == shape for obj in train_objects)


def test_render_scene_matches_the_document_image(train_docs):
    doc = train_docs[0]
    scene = sample_scene(7, 0, "train")
    assert np.array_equal(render_scene(scene), doc.segments[0].array)
    assert doc.meta == {"source": "shapescenes", "seed": 7, "split": "train", "index": 0,
                        **scene.to_meta()}


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        next(shapescenes(1, split="test"))
    with pytest.raises(ValueError, match="seed and index must be >= 0"):
        sample_scene(-1, 0)
