"""Attribute agreement: how often the record an image shows agrees with the one its prompt asks for."""

import copy

import pytest

from mot.data.sources.shapescene_attributes import caption_attributes, scene_attributes
from mot.data.sources.shapescenes import captions, sample_scene
from mot.eval.attribute_agreement import ATTRIBUTES, agreement, attribute_agreement

TWO = caption_attributes("a small red circle to the left of a large blue star on a grey background")
ONE = caption_attributes("a large green square on a white background")


def test_records_that_match_agree_on_everything():
    scenes = [sample_scene(0, i) for i in range(30)]
    records = [scene_attributes(s) for s in scenes]
    result = attribute_agreement(records, [captions(s)[1] for s in scenes])  # prompts as texts are parsed
    assert all(result[a] == 1.0 for a in ATTRIBUTES)
    assert result["items"] == 30 and result["excluded"] == 0
    assert result["two_object_items"] == sum(r["count"] == 2 for r in records) > 0


def test_swapped_objects_keep_colours_shapes_and_sizes_but_lose_the_relation():
    swapped = copy.deepcopy(TWO)
    swapped["objects"].reverse()
    scores = agreement(swapped, TWO)
    assert scores == {"background": True, "count": True, "colour": True, "shape": True, "size": True,
                      "relation": False, "all": False}
    other_axis = dict(TWO, axis="vertical")
    assert agreement(other_axis, TWO)["relation"] is False


def test_each_attribute_is_scored_on_its_own():
    assert agreement(dict(ONE, background="grey"), ONE) == {
        "background": False, "count": True, "colour": True, "shape": True, "size": True, "all": False}
    small = dict(ONE, objects=[dict(ONE["objects"][0], size="small")])
    assert agreement(small, ONE) == {"background": True, "count": True, "colour": True, "shape": True,
                                     "size": False, "all": False}
    one_of_two = {"count": 1, "background": "grey", "axis": None, "objects": TWO["objects"][:1]}
    scores = agreement(one_of_two, TWO)
    assert scores["background"] and not any(scores[a] for a in ("count", "colour", "shape", "size", "relation"))


def test_shares_are_over_the_scored_items_and_non_captions_are_excluded():
    swapped = copy.deepcopy(TWO)
    swapped["objects"].reverse()
    found = [TWO, swapped, ONE, dict(ONE, background="grey"), ONE]
    prompts = [TWO, TWO, ONE, ONE, "a handwritten digit 3"]
    result = attribute_agreement(found, prompts)
    assert result["items"] == 4 and result["excluded"] == 1 and result["two_object_items"] == 2
    assert result["background"] == 0.75 and result["colour"] == 1.0
    assert result["relation"] == 0.5 and result["all"] == 0.5


def test_without_two_object_prompts_relation_is_none():
    result = attribute_agreement([ONE], [ONE])
    assert result["relation"] is None and result["all"] == 1.0
    assert attribute_agreement([ONE], [None]) == {**{a: None for a in ATTRIBUTES}, "items": 0,
                                                  "two_object_items": 0, "excluded": 1}


def test_an_unreadable_record_agrees_on_nothing():
    result = attribute_agreement([None, "a handwritten digit 3", ONE], [TWO, ONE, ONE])
    assert result["items"] == 3 and result["relation"] == 0.0
    assert all(result[a] == 1 / 3 for a in ATTRIBUTES if a != "relation")


def test_one_record_per_prompt():
    with pytest.raises(ValueError, match="2 image records but 1 prompts"):
        attribute_agreement([ONE, ONE], [ONE])
