"""The canonical attribute record of a ShapeScenes scene, and every caption parsed back into it."""

import pytest

from mot.data.sources.shapescene_attributes import caption_attributes, meta_attributes, scene_attributes
from mot.data.sources.shapescenes import Scene, SceneObject, captions, sample_scene, shapescenes


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_paraphrase_parses_to_the_scene_record(split):
    for index in range(200):
        scene = sample_scene(3, index, split)
        record = scene_attributes(scene)
        for caption in captions(scene):
            assert caption_attributes(caption) == record, caption


def test_two_objects_are_listed_left_first_or_upper_first():
    seen_axes = set()
    for index in range(100):
        scene = sample_scene(0, index)
        record = scene_attributes(scene)
        assert record["count"] == len(scene.objects) == len(record["objects"])
        if record["count"] == 1:
            assert record["axis"] is None
            continue
        seen_axes.add(record["axis"])
        coordinate = "x" if record["axis"] == "horizontal" else "y"
        first = min(scene.objects, key=lambda obj: getattr(obj, coordinate))
        assert record["objects"][0] == {"colour": first.colour, "shape": first.shape, "size": first.size}
    assert seen_axes == {"horizontal", "vertical"}


def test_a_scene_and_its_mirror_description_give_one_record():
    red = SceneObject("circle", "red", "small", 0.25, 0.5)
    blue = SceneObject("star", "blue", "large", 0.75, 0.5)
    one = scene_attributes(Scene((red, blue), "left of", "grey"))
    assert one == scene_attributes(Scene((blue, red), "right of", "grey"))
    assert one == {"count": 2, "background": "grey", "axis": "horizontal",
                   "objects": [{"colour": "red", "shape": "circle", "size": "small"},
                               {"colour": "blue", "shape": "star", "size": "large"}]}
    assert caption_attributes("a large blue star to the right of a small red circle on a grey background") == one


def test_a_document_meta_gives_the_record_of_its_scene():
    for document in shapescenes(20, seed=5, size=8):
        scene = sample_scene(5, document.meta["index"])
        assert meta_attributes(document.meta) == scene_attributes(scene)


def test_case_spaces_a_full_stop_and_a_or_an_do_not_matter():
    expected = {"count": 1, "background": "orange", "axis": None,
                "objects": [{"colour": "red", "shape": "circle", "size": "small"}]}
    for text in ("a small red circle on an orange background", "A  Small red circle on a orange background.",
                 "  an orange background with a small red circle on it "):
        assert caption_attributes(text) == expected


@pytest.mark.parametrize("text", [
    "a handwritten digit 3", "", "a small red circle", "a small pink circle on a grey background",
    "a red circle on a grey background", "a small red circle on a grey background today",
    "a small red circle to the left of on a grey background", "a small red hexagon on a grey background"])
def test_text_that_is_no_shapescenes_caption_gives_none(text):
    assert caption_attributes(text) is None


def test_non_text_gives_none():
    assert caption_attributes(None) is None
