"""The evaluation stage of ``mot prepare``: the real images and reference captions that generation
is scored against, and the domain feature network that FID/KID and attribute agreement read
images with (:mod:`mot.tokenizers.image_features`).

* ``evaluation/<source>-<split>.npz`` for every captioned-image source and each of its splits
  but ``train`` (``valid``; ``heldout`` for ShapeScenes when prepared): ``images`` ``uint8
  [N, S, S, 3]``, ``captions`` (every paraphrase of each document) and ``labels`` (per image,
  head -> class, see :func:`labels_of`), the last two as JSON text, so ``np.load`` needs no
  pickle. :func:`read_evaluation_set` reads one back.
* with ``feature_steps`` > 0, the feature network trained on the train split's labelled images,
  saved under ``tokenizers/image_features/`` and recorded with its fingerprint and held-out
  accuracy per head in ``tokenizers/image_features.json``.

Both are resumable like every stage: what exists is kept; files are written under a temporary
name and renamed. A corpus prepared before this stage existed gains both on a rerun.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...tokenizers.image_features import (NONE, SOURCE, FeatureTraining, ImageFeatureNet, feature_accuracy,
                                          fit_image_features)
from ..documents import Document, ImageSegment, TextSegment
from ..sources.images import FASHION_CLASSES
from ..sources.shapescene_attributes import meta_attributes
from ..sources.shapescenes import BACKGROUNDS, COLOURS, SHAPES, SIZES
from .config import PrepareConfig, PrepareError
from .gathering import Source
from .records import write_json

EVALUATION_DIR = "evaluation"
FEATURES = "image_features"
#: at most this many passes over the training images (``feature_steps`` is capped to them): more
#: on a set of a few dozen images, as the tests prepare, would only learn it by heart
MAX_EPOCHS = 50
#: ``meta["source"]`` of the built-in image sources -> the source's name in a prepared corpus
_SOURCE_NAMES = {"shapescenes": "shapescenes", "sklearn-digits": "digits", "fashion-mnist": "fashion_mnist",
                 "noto-color-emoji": "emoji"}
_OBJECT_CLASSES = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES)}
#: every class of every labelled head (the ``source`` head's classes are the sources present)
HEAD_CLASSES = {"count": ("1", "2"), "background": tuple(BACKGROUNDS), "axis": (NONE, "horizontal", "vertical"),
                **{f"{attribute}_1": names for attribute, names in _OBJECT_CLASSES.items()},
                **{f"{attribute}_2": (NONE, *names) for attribute, names in _OBJECT_CLASSES.items()},
                "digit": tuple(str(d) for d in range(10)), "fashion": FASHION_CLASSES}


@dataclass
class EvaluationSet:
    """One source's real images of one split, with every caption and label of each."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    captions: List[List[str]]
    labels: List[dict]


def labels_of(document: Document, source: Optional[str] = None) -> Dict[str, str]:
    """The feature network's labels of a corpus document, head -> class name: ``source`` (the
    corpus's name for it: ``source``, else read from ``meta``), ShapeScenes' attributes (the
    canonical record of its ``meta``), the digit, the Fashion-MNIST class."""
    meta = document.meta or {}
    labels = {SOURCE: source or _SOURCE_NAMES.get(meta.get("source"), meta.get("source"))}
    if labels[SOURCE] is None:
        return {}
    if labels[SOURCE] == "shapescenes" and "objects" in meta:
        record = meta_attributes(meta)
        labels.update(count=str(record["count"]), background=record["background"], axis=record["axis"] or NONE)
        for k in (1, 2):
            obj = record["objects"][k - 1] if k <= record["count"] else dict.fromkeys(_OBJECT_CLASSES, NONE)
            labels.update({f"{attribute}_{k}": obj[attribute] for attribute in _OBJECT_CLASSES})
    elif labels[SOURCE] == "digits" and "label" in meta:
        labels["digit"] = str(meta["label"])
    elif labels[SOURCE] == "fashion_mnist" and "label" in meta:
        labels["fashion"] = FASHION_CLASSES[int(meta["label"])]
    return labels


def _image_and_captions(document: Document) -> Tuple[np.ndarray, List[str]]:
    image = next(s.array for s in document.segments if isinstance(s, ImageSegment))
    return image, [s.text for s in document.segments if isinstance(s, TextSegment)]


def set_path(out: Path, source: str, split: str) -> Path:
    """Where the evaluation set of ``source`` and ``split`` is kept."""
    return Path(out) / EVALUATION_DIR / f"{source}-{split}.npz"


def write_evaluation_set(path: Path, source: Source, split: str) -> int:
    """The images, captions and labels of ``source``'s ``split`` into ``path`` (whole or not at
    all); returns how many documents."""
    documents = source.chosen(split)
    pairs = [_image_and_captions(d) for d in documents]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, images=np.stack([image for image, _ in pairs]),
                 captions=np.array(json.dumps([captions for _, captions in pairs])),
                 labels=np.array(json.dumps([labels_of(d, source.name) for d in documents])))
    os.replace(temporary, path)
    return len(documents)


def read_evaluation_set(corpus_dir: str | Path, source: str, split: str) -> EvaluationSet:
    """The evaluation set of ``source`` and ``split`` of the corpus prepared in ``corpus_dir``."""
    path = set_path(Path(corpus_dir), source, split)
    if not path.is_file():
        raise PrepareError(f"{path} does not exist: the corpus has no evaluation set {source}-{split}. Rerunning "
                           f"`mot prepare` with the corpus's config adds the evaluation sets of a corpus prepared "
                           f"before mot wrote them (a source or split the config lacks has none)")
    try:
        with np.load(path, allow_pickle=False) as data:
            images = data["images"]
            captions, labels = json.loads(str(data["captions"])), json.loads(str(data["labels"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise PrepareError(f"{path} is not a complete evaluation set ({error}); delete it and rerun `mot prepare` "
                           f"with the corpus's config") from None
    if images.dtype != np.uint8 or images.ndim != 4 or not len(images) == len(captions) == len(labels):
        raise PrepareError(f"{path}: images {images.dtype} {list(images.shape)}, {len(captions)} caption lists and "
                           f"{len(labels)} labels do not make an evaluation set; delete it and rerun `mot prepare`")
    return EvaluationSet(images, captions, labels)


def evaluation_stage(out: Path, sources: List[Source], config: PrepareConfig,
                     log) -> Tuple[List[dict], Optional[dict]]:
    """Write the missing evaluation sets and train (or reuse) the feature network; returns the
    manifest's list of sets and the network's record (``None`` without one)."""
    entries = []
    for source in sources:
        for split, indices in source.splits.items() if source.kind == "captioned" else ():
            if split == "train" or not len(indices):
                continue
            path = set_path(out, source.name, split)
            if not path.is_file():
                count = write_evaluation_set(path, source, split)
                log(f"wrote {path} ({count} images)")
            entries.append({"path": str(path.relative_to(out)), "source": source.name, "split": split,
                            "count": len(indices)})
    return entries, _feature_network(out, sources, entries, config, log)


def _labelled(sources: List[Source], split: str) -> Tuple[np.ndarray, List[dict]]:
    """The images of ``split`` of every captioned source and their labels."""
    images, labels = [], []
    for source in sources:
        for document in source.chosen(split) if source.kind == "captioned" and split in source.splits else ():
            images.append(_image_and_captions(document)[0])
            labels.append(labels_of(document, source.name))
    return (np.stack(images) if images else np.zeros((0,), np.uint8)), labels


def _feature_network(out: Path, sources: List[Source], sets: List[dict], config: PrepareConfig,
                     log) -> Optional[dict]:
    """Train the feature network on the train split for ``feature_steps`` (at most
    ``MAX_EPOCHS`` passes) or reuse it, measure it on the held-out sets and record both;
    ``None`` when ``feature_steps`` is 0 or no image is labelled."""
    path, record = out / "tokenizers" / FEATURES, out / "tokenizers" / f"{FEATURES}.json"
    if not config.feature_steps:
        return None
    if path.is_dir() and record.is_file():
        log(f"image features: reusing {path}")
        return json.loads(record.read_text())
    images, labels = _labelled(sources, "train")
    if not any(len(label) > 1 for label in labels):
        log("image features: no labelled training image; no feature network")
        return None
    training = FeatureTraining(seed=config.seed)
    steps = min(config.feature_steps, math.ceil(MAX_EPOCHS * len(images) / training.batch_size))
    entry = {"steps": steps, "train_images": len(images)}
    if path.is_dir():
        log(f"image features: reusing {path}")
        net = ImageFeatureNet.load(path)
    else:
        log(f"image features: training on {len(images)} images for {steps} steps")
        start = time.perf_counter()
        net = fit_image_features(images, labels, dataclasses.replace(training, steps=steps), log,
                                 classes={**HEAD_CLASSES, SOURCE: sorted({label[SOURCE] for label in labels})})
        entry["training_seconds"] = round(time.perf_counter() - start, 2)
        temporary = path.with_name(path.name + ".tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        os.replace(net.save(temporary), path)
    entry = {"fingerprint": net.fingerprint(), **entry, "accuracy": _held_out_accuracy(out, net, sets, log)}
    write_json(record, entry)
    return entry


def _held_out_accuracy(out: Path, net: ImageFeatureNet, sets: List[dict], log) -> Dict[str, Dict[str, float]]:
    """Accuracy per head on each held-out split (every source's set of that split together)."""
    accuracy = {}
    for split in sorted({entry["split"] for entry in sets}):
        chosen = [read_evaluation_set(out, e["source"], split) for e in sets if e["split"] == split]
        known = [(image, label) for s in chosen for image, label in zip(s.images, s.labels)
                 if label.get(SOURCE) in net.config.head_classes[SOURCE]]
        if known:
            accuracy[split] = feature_accuracy(net, np.stack([i for i, _ in known]), [l for _, l in known])
            log(f"image features: {split} accuracy " + ", ".join(f"{h} {v:.3f}" for h, v in accuracy[split].items()))
    return accuracy
