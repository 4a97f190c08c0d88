"""The exact ShapeScenes scorer: captions parsed in every template, attributes read from images."""

import numpy as np

from mot.data.sources.shapescenes import captions, render_scene, sample_scene
from mot.eval.shape_scores import ShapeScorer, accuracy, caption_accuracy, caption_names, parse_caption


def single_and_double_scenes():
    scenes = [sample_scene(0, i) for i in range(40)]
    return [s for s in scenes if len(s.objects) == 1], [s for s in scenes if len(s.objects) == 2]


def test_every_single_object_template_parses_to_the_scene_and_two_objects_do_not():
    singles, doubles = single_and_double_scenes()
    for scene in singles:
        truth = {"background": scene.background, "colour": scene.objects[0].colour, "shape": scene.objects[0].shape}
        assert all(parse_caption(c) == truth for c in captions(scene))
    assert all(parse_caption(c) is None for scene in doubles for c in captions(scene))
    assert parse_caption("to be or not to be") is None
    assert parse_caption("a large pink circle on a white background") is None  # not a ShapeScenes colour


def test_the_scorer_reads_rendered_scenes_and_accuracy_counts_matches():
    scorer = ShapeScorer.fit(count=300, seed=0)
    scores = scorer.self_check(count=120, seed=1)
    assert scores["background"] == 1.0 and scores["colour"] >= 0.95
    assert scores["shape"] > 0.4  # six shapes: chance is 1/6
    blank = np.full((1, 32, 32, 3), 128, dtype=np.uint8)  # a grey image shows no object
    assert scorer.read(blank) == [{"background": "grey", "colour": None, "shape": None}]
    truth = [{"background": "grey", "colour": "red", "shape": "star"}] * 2
    found = [{"background": "grey", "colour": "red", "shape": "circle"}, {"background": "grey", "colour": "red",
                                                                          "shape": "star"}]
    assert accuracy(found, truth) == {"background": 1.0, "colour": 1.0, "shape": 0.5, "all": 0.5}
    assert accuracy([], []) == {}
    assert render_scene(sample_scene(0, 0)).shape == (32, 32, 3)


def test_a_caption_is_credited_for_each_attribute_it_names():
    truth = {"background": "yellow", "colour": "purple", "shape": "star"}
    assert caption_names("one small purple star, yellow background", truth) == dict.fromkeys(
        ["background", "colour", "shape", "all"], True)
    two = caption_names("a small purple circle to the right of a large red star on a yellow background", truth)
    assert two == {"background": True, "colour": True, "shape": True, "all": False}  # no "purple star"
    assert caption_names("a handwritten digit 8", truth) == dict.fromkeys(["background", "colour", "shape", "all"],
                                                                          False)
    assert caption_accuracy(["one small purple star, yellow background", "a red star on a blue background"],
                            [truth, truth]) == {"background": 0.5, "colour": 0.5, "shape": 1.0, "all": 0.5}
