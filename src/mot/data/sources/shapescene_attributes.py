"""The canonical attribute record of a ShapeScenes scene, and the parser of its captions into the
same record: what text->image scoring compares (the record a prompt asks for against the record
a generated image shows).

The record::

    {"count": 1 | 2, "background": "grey", "axis": None | "horizontal" | "vertical",
     "objects": [{"colour": "red", "shape": "circle", "size": "small"}, ...]}

Two objects are listed in a canonical order, the left one first (``left of`` / ``right of``:
``axis`` horizontal) or the upper one first (``above`` / ``below``: vertical), so the record does
not depend on which object a caption happens to name first ("a red circle to the left of a blue
star" and "a blue star to the right of a red circle" give one record).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from .shapescenes import BACKGROUNDS, COLOURS, RELATION_PHRASES, SHAPES, SIZES, Scene, SceneObject

AXES = {"left of": "horizontal", "right of": "horizontal", "above": "vertical", "below": "vertical"}
#: relations whose first object comes first in the canonical order (it is the left / upper one)
_FIRST_LEADS = ("left of", "above")


def scene_attributes(scene: Scene) -> Dict[str, Any]:
    """The canonical record of ``scene`` (see the module docstring)."""
    objects = [_object(obj.colour, obj.shape, obj.size) for obj in scene.objects]
    return _record(scene.background, scene.relation, objects)


def meta_attributes(meta: Dict[str, Any]) -> Dict[str, Any]:
    """The canonical record of a ShapeScenes document's ``meta`` (the attribute record that
    :meth:`Scene.to_meta` writes)."""
    objects = tuple(SceneObject(**{k: obj[k] for k in ("shape", "colour", "size", "x", "y")})
                    for obj in meta["objects"])
    return scene_attributes(Scene(objects, meta["relation"], meta["background"]))


def _object(colour: str, shape: str, size: str) -> Dict[str, str]:
    return {"colour": colour, "shape": shape, "size": size}


def _record(background: str, relation: Optional[str], objects: List[Dict[str, str]]) -> Dict[str, Any]:
    """``objects[0]`` is ``relation`` of ``objects[1]`` (when there are two)."""
    if relation is not None and relation not in _FIRST_LEADS:
        objects = objects[::-1]
    return {"count": len(objects), "background": background,
            "axis": None if relation is None else AXES[relation], "objects": objects}


# ------------------------------------------------------------------------------------ captions --

def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_A = "an?"
_BG = f"(?P<bg>{_alternatives(BACKGROUNDS)})"
_REL = f"(?P<rel>{_alternatives(RELATION_PHRASES.values())})"


def _phrase(name: str) -> str:
    """``small red circle`` with its three words captured as ``<name>_size`` etc."""
    return (f"(?P<{name}_size>{_alternatives(SIZES)}) (?P<{name}_colour>{_alternatives(COLOURS)}) "
            f"(?P<{name}_shape>{_alternatives(SHAPES)})")


# Every template of ``shapescenes.captions``. In the two-object ones ``x`` is ``rel`` of ``y``
# (the inverse-relation paraphrase names the objects the other way round, which the same form covers).
_ONE_OBJECT = ("A X on A BG background", "A BG background with A X on it",
               "A picture of A single X against A BG background", "one X, BG background")
_TWO_OBJECTS = ("A X REL A Y on A BG background", "A X REL A Y, on A BG background",
                "on A BG background, A X is REL A Y", "A BG background: A Y with A X REL it")


def _compile(template: str) -> re.Pattern:
    pattern = template.replace("BG", _BG).replace("REL", _REL).replace("X", _phrase("x")).replace("Y", _phrase("y"))
    return re.compile(pattern.replace("A ", f"{_A} "))


_PATTERNS = [_compile(t) for t in _ONE_OBJECT + _TWO_OBJECTS]
_RELATION_OF_PHRASE = {phrase: relation for relation, phrase in RELATION_PHRASES.items()}


def caption_attributes(text: str) -> Optional[Dict[str, Any]]:
    """The canonical record a ShapeScenes caption describes (any paraphrase that
    ``shapescenes.captions`` writes, one or two objects, either way round; case, surrounding
    spaces and a final full stop do not matter), or ``None`` for text that is not such a caption."""
    if not isinstance(text, str):
        return None
    normalized = " ".join(text.lower().split()).rstrip(".")
    for pattern in _PATTERNS:
        found = pattern.fullmatch(normalized)
        if found is None:
            continue
        groups = found.groupdict()
        objects = [_object(groups[f"{n}_colour"], groups[f"{n}_shape"], groups[f"{n}_size"])
                   for n in ("x", "y") if groups.get(f"{n}_shape")]
        relation = _RELATION_OF_PHRASE[groups["rel"]] if groups.get("rel") else None
        return _record(groups["bg"], relation, objects)
    return None
