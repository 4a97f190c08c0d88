"""ShapeScenes: generated images of one or two coloured shapes, with exact attributes and captions.

A scene has one shape, or two shapes in a spatial relation (``left of``, ``right of``, ``above``,
``below``: the first object relative to the second), each with a colour, a shape and a size, on a
background whose colour differs from every object's. Because the attributes are known exactly,
text→image and image→text can be scored exactly (the attribute record is each document's
``meta``). Scenes are drawn at 8x the target size and box-filtered down, so edges are
anti-aliased.

Scene ``i`` of ``(seed, split)`` depends on nothing else, so any range of indices can be
generated on its own (in parallel, or resumed) and gives the same bytes every time.

Compositional splits: the colour-shape pairs in :data:`HELDOUT_PAIRS` never occur in the
``train`` split; every ``heldout`` scene contains at least one of them. Each colour and each
shape still occurs in ``train`` with other partners, so a model can only describe or draw a
held-out pair by composing what it learnt separately.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from mot.data.documents import Document, ImageSegment, TextSegment
from mot.data.imaging import rgb_array

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS = {  # object colours, far enough apart to stay distinct after anti-aliasing
    "red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220),
    "yellow": (245, 215, 40), "purple": (140, 60, 190), "orange": (250, 140, 20),
    "white": (245, 245, 245), "black": (20, 20, 20),
}
BACKGROUNDS = {**COLOURS, "grey": (128, 128, 128)}  # grey is never an object colour
SIZES = {"small": 0.12, "large": 0.19}  # radius of the shape, as a fraction of the image side
RELATIONS = ("left of", "right of", "above", "below")
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below",
                    "below": "above"}
RELATION_PHRASES = {"left of": "to the left of", "right of": "to the right of",
                    "above": "above", "below": "below"}
# One pair per shape and six different colours: every colour and shape still occurs in train.
HELDOUT_PAIRS = frozenset({("red", "triangle"), ("green", "circle"), ("blue", "star"),
                           ("yellow", "square"), ("purple", "cross"), ("orange", "diamond")})
SPLITS = ("train", "heldout")

_ALL_PAIRS = tuple((colour, shape) for colour in COLOURS for shape in SHAPES)
_TRAIN_PAIRS = tuple(pair for pair in _ALL_PAIRS if pair not in HELDOUT_PAIRS)
_HELDOUT_PAIRS = tuple(pair for pair in _ALL_PAIRS if pair in HELDOUT_PAIRS)
_SUPERSAMPLE = 8  # draw at 8x the target size, then average 8x8 blocks: anti-aliased edges


@dataclass(frozen=True)
class SceneObject:
    """One shape: centre ``x``, ``y`` as fractions of the image side (``y`` grows downwards)."""

    shape: str
    colour: str
    size: str
    x: float
    y: float

    def phrase(self) -> str:
        """``"small red circle"``: what the captions call this object."""
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """One or two objects; with two, ``relation`` says where ``objects[0]`` is relative to
    ``objects[1]``."""

    objects: tuple[SceneObject, ...]
    relation: str | None
    background: str

    def to_meta(self) -> dict:
        """The attribute record, in plain JSON types."""
        return {"background": self.background, "relation": self.relation,
                "objects": [asdict(obj) for obj in self.objects]}


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return SPLITS.index(split)


def sample_scene(seed: int, index: int, split: str = "train") -> Scene:
    """Scene ``index`` of ``(seed, split)``: a pure function of its arguments."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, _split_id(split), index])
    count = 1 + int(rng.integers(2))
    if split == "train":
        first = _TRAIN_PAIRS[rng.integers(len(_TRAIN_PAIRS))]
        others = [pair for pair in _TRAIN_PAIRS if pair != first]
    else:
        first = _HELDOUT_PAIRS[rng.integers(len(_HELDOUT_PAIRS))]
        others = [pair for pair in _ALL_PAIRS if pair != first]
    pairs = [first]
    if count == 2:
        pairs.append(others[rng.integers(len(others))])
        if rng.integers(2):  # the held-out object (in heldout) is the first or second at random
            pairs.reverse()
    sizes = [tuple(SIZES)[rng.integers(len(SIZES))] for _ in pairs]
    relation = RELATIONS[rng.integers(len(RELATIONS))] if count == 2 else None
    centres = _place(rng, sizes, relation)
    used = {colour for colour, _ in pairs}
    backgrounds = [name for name in BACKGROUNDS if name not in used]
    background = backgrounds[rng.integers(len(backgrounds))]
    objects = tuple(SceneObject(shape, colour, size, x, y)
                    for (colour, shape), size, (x, y) in zip(pairs, sizes, centres))
    return Scene(objects, relation, background)


def _place(rng: np.random.Generator, sizes: list[str], relation: str | None) -> list[tuple]:
    """Centres for the objects: inside the image, not overlapping, and (for two) unambiguously
    in ``relation``: separated along its axis, nearly aligned along the other."""
    def uniform(low: float, high: float) -> float:
        return round(float(rng.uniform(low, high)), 4)

    if relation is None:
        margin = SIZES[sizes[0]] + 0.04
        return [(uniform(margin, 1 - margin), uniform(margin, 1 - margin))]
    # The first object sits in the near slot (left/top) for "left of"/"above". Slot centres
    # 0.21-0.27 and 0.73-0.79 keep two large stars (tips at 1.1 x radius 0.19) apart and inside
    # the image.
    near, far = uniform(0.21, 0.27), uniform(0.73, 0.79)
    along = (near, far) if relation in ("left of", "above") else (far, near)
    across = (uniform(0.38, 0.62), uniform(0.38, 0.62))
    if relation in ("left of", "right of"):
        return list(zip(along, across))
    return list(zip(across, along))


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of ``shape`` centred on ``(cx, cy)`` with radius ``r`` (pixels)."""
    def ring(radii: list[float], start_degrees: float, dx: float = 0.0, dy: float = 0.0):
        step = 360 / len(radii)
        return [(cx + dx + radius * math.cos(math.radians(start_degrees + k * step)),
                 cy + dy + radius * math.sin(math.radians(start_degrees + k * step)))
                for k, radius in enumerate(radii)]

    if shape == "square":
        half = 0.8 * r  # a square of the full radius would look much bigger than a circle
        return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half),
                (cx - half, cy + half)]
    if shape == "diamond":
        return ring([r] * 4, -90)
    if shape == "triangle":
        # Equilateral, pointing up; lowered by a quarter radius so its box is centred.
        return ring([1.1 * r] * 3, -90, dy=0.275 * r)
    if shape == "star":
        return ring([1.1 * r, 0.45 * r] * 5, -90)
    if shape == "cross":
        w = 0.33 * r  # half the width of each arm
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
                (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
                (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def render_scene(scene: Scene, size: int = 32) -> np.ndarray:
    """The scene as uint8 ``[size, size, 3]`` RGB."""
    side = size * _SUPERSAMPLE
    canvas = Image.new("RGB", (side, side), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        cx, cy, r = obj.x * side, obj.y * side, SIZES[obj.size] * side
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[obj.colour])
        else:
            draw.polygon(_shape_points(obj.shape, cx, cy, r), fill=COLOURS[obj.colour])
    return rgb_array(canvas, size)


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def captions(scene: Scene) -> list[str]:
    """Paraphrases of the scene (four), each naming every object's size, colour and shape, the
    relation (or its inverse, with the objects swapped) and the background."""
    bg = scene.background
    a_bg = f"{_a(bg)} {bg}"
    if scene.relation is None:
        p = scene.objects[0].phrase()
        return [f"a {p} on {a_bg} background",
                f"{a_bg} background with a {p} on it",
                f"a picture of a single {p} against {a_bg} background",
                f"one {p}, {bg} background"]
    p0, p1 = (obj.phrase() for obj in scene.objects)
    rel = RELATION_PHRASES[scene.relation]
    inverse = RELATION_PHRASES[INVERSE_RELATION[scene.relation]]
    return [f"a {p0} {rel} a {p1} on {a_bg} background",
            f"a {p1} {inverse} a {p0}, on {a_bg} background",
            f"on {a_bg} background, a {p0} is {rel} a {p1}",
            f"{a_bg} background: a {p1} with a {p0} {rel} it"]


def shapescenes(count: int, seed: int = 0, split: str = "train", size: int = 32,
                start: int = 0) -> Iterator[Document]:
    """Scenes ``start .. start + count - 1`` of ``(seed, split)`` as documents: the image
    (``size x size`` RGB array) followed by every caption paraphrase, one text segment each;
    ``meta`` holds the attribute record plus source, seed, split and index."""
    _split_id(split)
    for index in range(start, start + count):
        scene = sample_scene(seed, index, split)
        meta = {"source": "shapescenes", "seed": seed, "split": split, "index": index,
                **scene.to_meta()}
        segments = (ImageSegment(array=render_scene(scene, size)),
                    *(TextSegment(caption) for caption in captions(scene)))
        yield Document(f"shapescenes-{split}-s{seed}-{index:07d}", segments, meta)
