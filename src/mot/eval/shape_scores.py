"""Exact scores for ShapeScenes: which background colour, object colour and shape a (generated)
image shows, and whether a caption names them, for single-object scenes.

ShapeScenes' attributes are known exactly, so text -> image and image -> text can be scored
without a learnt judge of quality: the background is the palette colour nearest the image's
border, the object is every pixel far from the background, its colour the palette colour nearest
the median of its core (the pixels farthest from the background), and its shape comes from a
small MLP over the object's soft silhouette (16x16 around its centre of mass) fitted on rendered
scenes passed through the image VAE, so it sees the blur generated images have.
:meth:`ShapeScorer.self_check` reports its accuracy on other rendered scenes: the ceiling for
any generator.
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..data.sources.shapescene_attributes import caption_attributes
from ..data.sources.shapescenes import BACKGROUNDS, COLOURS, SHAPES, render_scene, sample_scene

ATTRIBUTES = ("background", "colour", "shape")
#: RGB distance beyond which a pixel is not background
OBJECT_DISTANCE = 60.0
SILHOUETTE = 16


def parse_caption(text: str) -> Optional[Dict[str, str]]:
    """``{"background", "colour", "shape"}`` of a single-object caption in any of ShapeScenes'
    templates ("a large red circle on a white background", "one small red circle, white
    background", ...; read by :func:`~mot.data.sources.shapescene_attributes.caption_attributes`);
    ``None`` for two objects or text that is no such caption."""
    record = caption_attributes(text)
    if record is None or record["count"] != 1:
        return None
    scene_object = record["objects"][0]
    return {"background": record["background"], "colour": scene_object["colour"], "shape": scene_object["shape"]}


def caption_names(text: str, truth: Dict[str, str]) -> Dict[str, bool]:
    """Whether a (generated) caption names the scene's background (the word before "background"),
    its object's colour and its shape (the colour or shape of some object it names: a caption of
    two objects is still credited for the one that is there), and ``all`` of them together
    (background right and "colour shape" named as one object)."""
    words = text.lower().replace(",", " ").replace(":", " ").split()
    backgrounds = {words[i - 1] for i, w in enumerate(words) if w == "background" and i > 0}
    objects = {(words[i - 1], w) for i, w in enumerate(words) if w in SHAPES and i > 0}
    named = {"background": truth["background"] in backgrounds,
             "colour": any(colour == truth["colour"] for colour, _ in objects),
             "shape": any(shape == truth["shape"] for _, shape in objects)}
    named["all"] = named["background"] and (truth["colour"], truth["shape"]) in objects
    return named


def _nearest(colours: Dict[str, tuple], rgb: np.ndarray, exclude: Sequence[str] = ()) -> str:
    names = [n for n in colours if n not in exclude]
    table = np.array([colours[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(((table - rgb) ** 2).sum(1)))]


def _silhouette(distance: np.ndarray) -> np.ndarray:
    """The object's soft silhouette (distance from the background, scaled to [0, 1]) in a
    ``SILHOUETTE``-pixel window centred on its centre of mass: where it is does not matter, its
    size and outline do."""
    weights = np.clip(distance / (2 * OBJECT_DISTANCE), 0, 1)
    total = weights.sum()
    if total == 0:
        return np.zeros(SILHOUETTE * SILHOUETTE)
    rows, columns = np.indices(weights.shape)
    centre = [int(round(float((rows * weights).sum() / total))), int(round(float((columns * weights).sum() / total)))]
    half = SILHOUETTE // 2
    padded = np.pad(weights, half)
    window = padded[centre[0]:centre[0] + SILHOUETTE, centre[1]:centre[1] + SILHOUETTE]
    return window.reshape(-1)


class ShapeScorer:
    """Reads the attributes of single-object 32x32 ShapeScenes images (``uint8 [N, S, S, 3]``)."""

    def __init__(self, classifier):
        self.classifier = classifier

    @staticmethod
    def _colours_and_distance(image: np.ndarray):
        pixels = image.astype(np.float64)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        background = _nearest(BACKGROUNDS, np.median(border, axis=0))
        distance = np.sqrt(((pixels - BACKGROUNDS[background]) ** 2).sum(-1))
        # the object's colour from its core: edge pixels are a mix of it and the background
        core = pixels[distance >= max(OBJECT_DISTANCE, 0.8 * distance.max())]
        colour = _nearest(COLOURS, np.median(core, axis=0), exclude=[background]) if len(core) else None
        return background, colour, distance

    @classmethod
    def fit(cls, images_through: Callable[[np.ndarray], np.ndarray] = lambda x: x, count: int = 3000,
            seed: int = 0) -> "ShapeScorer":
        """Fit the shape classifier on ``count`` single-object training scenes, each image passed
        through ``images_through`` (e.g. the VAE's encode then decode)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        scenes = _single_object_scenes(seed, count, "train")
        images = images_through(np.stack([render_scene(s) for s in scenes]))
        features = np.stack([_silhouette(cls._colours_and_distance(image)[2]) for image in images])
        with warnings.catch_warnings():  # 500 epochs is the budget, converged or not: self_check says how good
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifier = MLPClassifier((128,), max_iter=500, random_state=seed).fit(
                features, [s.objects[0].shape for s in scenes])
        return cls(classifier)

    def read(self, images: np.ndarray) -> List[Dict[str, Optional[str]]]:
        """The attributes each image shows."""
        found = []
        for image in images:
            background, colour, distance = self._colours_and_distance(image)
            shape = str(self.classifier.predict(_silhouette(distance)[None])[0]) if colour is not None else None
            found.append({"background": background, "colour": colour, "shape": shape})
        return found

    def self_check(self, images_through: Callable[[np.ndarray], np.ndarray] = lambda x: x,
                   count: int = 500, seed: int = 1) -> Dict[str, float]:
        """Accuracy per attribute on ``count`` other rendered scenes (through ``images_through``)."""
        scenes = _single_object_scenes(seed, count, "train")
        truth = [{"background": s.background, "colour": s.objects[0].colour, "shape": s.objects[0].shape}
                 for s in scenes]
        return accuracy(self.read(images_through(np.stack([render_scene(s) for s in scenes]))), truth)


def accuracy(found: Sequence[Dict[str, Optional[str]]], truth: Sequence[Dict[str, str]]) -> Dict[str, float]:
    """Share of items whose attribute matches, per attribute, and ``all`` three at once."""
    if not truth:
        return {}
    scores = {a: float(np.mean([f.get(a) == t[a] for f, t in zip(found, truth)])) for a in ATTRIBUTES}
    scores["all"] = float(np.mean([all(f.get(a) == t[a] for a in ATTRIBUTES) for f, t in zip(found, truth)]))
    return scores


def caption_accuracy(captions: Sequence[str], truth: Sequence[Dict[str, str]]) -> Dict[str, float]:
    """Per attribute (and ``all``), the share of ``captions`` that name their scene's (:func:`caption_names`)."""
    named = [caption_names(c, t) for c, t in zip(captions, truth)]
    return {key: float(np.mean([n[key] for n in named])) for key in (*ATTRIBUTES, "all")} if named else {}


def _single_object_scenes(seed: int, count: int, split: str):
    scenes, index = [], 0
    while len(scenes) < count:
        scene = sample_scene(seed + 10_000, index, split)  # not the corpus's seeds
        index += 1
        if len(scene.objects) == 1:
            scenes.append(scene)
    return scenes
