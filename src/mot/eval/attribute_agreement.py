"""Attribute agreement, a CLIP-score analogue for text -> image on ShapeScenes: how often the
attributes a generated image shows (read by the feature network,
:meth:`~mot.tokenizers.image_features.ImageFeatureNet.scene_attributes`) agree with those its
prompt asks for (:func:`~mot.data.sources.shapescene_attributes.caption_attributes`).

Both sides are canonical records (``count``, ``background``, ``axis``, ``objects`` with the
left / upper object first), so the comparison does not depend on how the prompt was worded.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from ..data.sources.shapescene_attributes import caption_attributes

#: what is compared; ``relation`` only for two-object prompts
ATTRIBUTES = ("background", "count", "colour", "shape", "size", "relation", "all")


def _multiset(record: Mapping[str, Any], *keys: str) -> Counter:
    return Counter(tuple(obj.get(k) for k in keys) for obj in record.get("objects") or ())


def _ordered(record: Mapping[str, Any]) -> list:
    return [(obj.get("colour"), obj.get("shape"), obj.get("size")) for obj in record.get("objects") or ()]


def agreement(found: Optional[Mapping[str, Any]], prompt: Mapping[str, Any]) -> Dict[str, bool]:
    """Per attribute, whether ``found`` (an image's record; ``None``, as for a generated caption
    that does not parse, agrees on nothing) agrees with ``prompt`` (the record asked for): the
    background; the count; the objects' colours, shapes and sizes, each as a multiset (sizes
    as whole objects, colour, shape and size together: a size means something only of an
    object); ``relation``, for two objects, when the same objects stand in the same order along
    the same axis; ``all``, when the records are equal."""
    found = found or {}
    scores = {"background": found.get("background") == prompt["background"],
              "count": found.get("count") == prompt["count"],
              "colour": _multiset(found, "colour") == _multiset(prompt, "colour"),
              "shape": _multiset(found, "shape") == _multiset(prompt, "shape"),
              "size": _multiset(found, "colour", "shape", "size") == _multiset(prompt, "colour", "shape", "size"),
              "all": all(found.get(k) == prompt[k] for k in ("count", "background", "axis"))
              and _ordered(found) == _ordered(prompt)}
    if prompt["count"] == 2:
        scores["relation"] = found.get("axis") == prompt["axis"] and _ordered(found) == _ordered(prompt)
    return scores


def attribute_agreement(found: Sequence[Union[Mapping[str, Any], str, None]],
                        prompts: Sequence[Union[Mapping[str, Any], str, None]]) -> Dict[str, Any]:
    """The share of items that agree, per attribute of :data:`ATTRIBUTES` (see :func:`agreement`;
    ``relation`` over the two-object prompts; ``None`` where no item counts), and ``items`` (how
    many were scored), ``two_object_items`` and ``excluded``. Both sides are records or caption
    texts (parsed here). An item whose prompt is not a ShapeScenes caption is left out and counted
    in ``excluded``; one whose ``found`` is ``None`` (or text that does not parse) agrees on nothing."""
    if len(found) != len(prompts):
        raise ValueError(f"{len(found)} image records but {len(prompts)} prompts: one record per prompt")
    found, records = ([caption_attributes(r) if isinstance(r, str) else r for r in side] for side in (found, prompts))
    scored = [agreement(f, p) for f, p in zip(found, records) if p is not None]
    result: Dict[str, Optional[float]] = {}
    for attribute in ATTRIBUTES:
        values = [s[attribute] for s in scored if attribute in s]
        result[attribute] = sum(values) / len(values) if values else None
    return {**result, "items": len(scored), "two_object_items": sum("relation" in s for s in scored),
            "excluded": len(records) - len(scored)}
