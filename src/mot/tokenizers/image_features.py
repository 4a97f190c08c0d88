"""A domain feature network for evaluation without downloaded weights: FID/KID features and the
attributes a (generated) image shows.

FID and KID are usually computed on the features of an Inception network trained on ImageNet,
which would have to be downloaded and knows nothing of ShapeScenes. :class:`ImageFeatureNet` is
trained instead by ``mot prepare`` on the corpus's own real images, to tell which source an image
comes from and every label the corpus knows about it (ShapeScenes' count, background, axis and
each object's colour, shape and size; the digit; the Fashion-MNIST class). Its last hidden layer,
``[N, feature_dim]``, is the feature vector; its heads read the attributes back.

Three stride-2 conv stages (GroupNorm, SiLU) take a 32x32 image to 4x4. The map is flattened (where
things are is what ``axis`` and the object order are about), its mean and max over positions are
added (what is anywhere in it), and a linear layer, SiLU and a LayerNorm without affine make the
features: every image's vector has mean 0 and variance 1 over its entries, one scale for FID and
KID (KID's cubic kernel blows up on large features). Each head's classes are kept in the config,
so a saved network describes itself.
Images: ``uint8 [N, S, S, 3]`` for :meth:`~ImageFeatureNet.features` and the other readers (as
the corpus holds them); :meth:`~ImageFeatureNet.forward` takes ``[N, 3, S, S]`` (``uint8``, or
float in ``[-1, 1]``), the form torchmetrics passes to a custom feature extractor.

Like a tokenizer it is trained once, frozen, saved as ``config.json`` + ``model.safetensors`` +
``checksums.json`` and identified by a fingerprint; :func:`feature_accuracy` measures it on
held-out images.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, check_number
from ..progress import Progress
from .image_common import images_to_tensor
from .saved import SavedTokenizer, config_to_dict

KIND = "image_features"
SOURCE = "source"
#: the ShapeScenes heads; a one-object scene's second object is the class ``none``, as is its axis
SCENE_HEADS = ("count", "background", "axis", "colour_1", "shape_1", "size_1", "colour_2", "shape_2", "size_2")
NONE = "none"
_BATCH = 512


@dataclass(frozen=True)
class ImageFeatureConfig:
    """The network's shape and its heads: ``heads[i]`` tells ``classes[i]`` apart."""

    image_size: int = 32
    widths: Tuple[int, ...] = (24, 48, 96)
    feature_dim: int = 128
    heads: Tuple[str, ...] = ()
    classes: Tuple[Tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "heads", tuple(self.heads))
        object.__setattr__(self, "classes", tuple(tuple(c) for c in self.classes))
        for name, value in (("image_size", self.image_size), ("feature_dim", self.feature_dim),
                            *(("widths", w) for w in self.widths)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}: must be an integer >= 1")
        if not self.widths or self.image_size % 2 ** len(self.widths):
            raise ConfigError(f"image_size={self.image_size}: must be divisible by 2 ** len(widths) "
                              f"(widths={list(self.widths)})")
        if len(self.heads) != len(self.classes) or len(set(self.heads)) != len(self.heads):
            raise ConfigError(f"heads={list(self.heads)}: must be distinct, one per class list "
                              f"({len(self.classes)} given)")
        for head, names in zip(self.heads, self.classes):
            if not names or len(set(names)) != len(names):
                raise ConfigError(f"classes of head {head!r}={list(names)}: must be distinct and not empty")

    @property
    def head_classes(self) -> Dict[str, Tuple[str, ...]]:
        return dict(zip(self.heads, self.classes))

    def to_dict(self) -> dict:
        return config_to_dict(self, KIND)


def _stage(width_in: int, width: int) -> nn.Sequential:
    """Halve the resolution, then one more conv; GroupNorm + SiLU after each."""
    groups = math.gcd(8, width)
    return nn.Sequential(nn.Conv2d(width_in, width, 3, stride=2, padding=1), nn.GroupNorm(groups, width), nn.SiLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(groups, width), nn.SiLU())


class ImageFeatureNet(SavedTokenizer, nn.Module):
    """Images -> features ``[N, feature_dim]`` (:meth:`forward`, :meth:`features`) -> each head's
    class (:meth:`predict`, :meth:`scene_attributes`). ``num_features`` is what torchmetrics reads
    of a custom feature extractor."""

    kind = KIND
    config_class = ImageFeatureConfig

    def __init__(self, config: ImageFeatureConfig):
        super().__init__()
        self.config = config
        self.num_features = config.feature_dim
        widths = (3, *config.widths)
        self.stages = nn.Sequential(*[_stage(a, b) for a, b in zip(widths, widths[1:])])
        side = config.image_size // 2 ** len(config.widths)
        self.project = nn.Sequential(nn.Linear(widths[-1] * (side * side + 2), config.feature_dim), nn.SiLU(),
                                     nn.LayerNorm(config.feature_dim, elementwise_affine=False))
        self.heads = nn.ModuleDict({h: nn.Linear(config.feature_dim, len(c)) for h, c in config.head_classes.items()})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` images, ``uint8`` or float in ``[-1, 1]`` -> features ``[N, feature_dim]``."""
        s = self.config.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"images must have shape [N, 3, {s}, {s}] (channels first); got {list(images.shape)}")
        x = images.float().div(127.5).sub(1.0) if images.dtype == torch.uint8 else images.float()
        hidden = self.stages(x)  # [N, C, s, s]
        # where each thing is (the map) and what is anywhere (its mean and max)
        summary = torch.cat([hidden.flatten(1), hidden.mean((2, 3)), hidden.amax((2, 3))], dim=1)
        return self.project(summary)

    def logits(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Each head's logits ``[N, classes]`` from features ``[N, feature_dim]``."""
        return {head: layer(features) for head, layer in self.heads.items()}

    @torch.no_grad()
    def _in_batches(self, images, read: Callable[[torch.Tensor], object]) -> list:
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        x = images_to_tensor(images, self.config.image_size)  # float [N, 3, S, S] in [-1, 1]
        try:
            return [read(self(x[i:i + _BATCH].to(device))) for i in range(0, len(x), _BATCH)]
        finally:
            self.train(was_training)

    def features(self, images: np.ndarray) -> torch.Tensor:
        """``uint8 [N, S, S, 3]`` images -> float32 features ``[N, feature_dim]`` on the CPU
        (eval mode, no gradient, in batches: the same images always give the same features)."""
        parts = self._in_batches(images, lambda f: f.float().cpu())
        return torch.cat(parts) if parts else torch.zeros(0, self.config.feature_dim)

    def _argmax(self, images: np.ndarray,
                allowed: Optional[Mapping[str, Sequence[bool]]] = None) -> Dict[str, np.ndarray]:
        """Per head, the index of the most likely class (among ``allowed`` ones, where given) ``[N]``."""
        def read(features):
            out = {}
            for head, logits in self.logits(features).items():
                if allowed and head in allowed:
                    logits = logits.masked_fill(~torch.tensor(allowed[head], device=logits.device), -math.inf)
                out[head] = logits.argmax(-1).cpu().numpy()
            return out

        parts = self._in_batches(images, read)
        return {h: np.concatenate([p[h] for p in parts]) if parts else np.zeros(0, np.int64) for h in self.heads}

    def predict(self, images: np.ndarray) -> List[Dict[str, str]]:
        """Per image, every head's most likely class name (``source`` among them)."""
        indices, classes = self._argmax(images), self.config.head_classes
        return [{h: classes[h][int(indices[h][i])] for h in self.heads} for i in range(len(images))]

    def scene_attributes(self, images: np.ndarray) -> List[dict]:
        """Per image, the ShapeScenes record it shows, in the format of
        :func:`mot.data.sources.shapescene_attributes.scene_attributes`: the count first, then
        for two objects the axis and second object among their classes other than ``none``."""
        missing = [h for h in SCENE_HEADS if h not in self.heads]
        if missing:
            raise ValueError(f"this feature network has no ShapeScenes head(s) {missing}: it was trained "
                             f"without ShapeScenes images")
        classes = self.config.head_classes
        allowed = {h: [c != NONE for c in classes[h]] for h in ("axis", "colour_2", "shape_2", "size_2")}
        plain, two = self._argmax(images), self._argmax(images, allowed)
        records = []
        for i in range(len(images)):
            count = int(classes["count"][int(plain["count"][i])])
            found = two if count == 2 else plain
            name = {h: classes[h][int(found[h][i])] for h in SCENE_HEADS}
            objects = [{"colour": name[f"colour_{k}"], "shape": name[f"shape_{k}"], "size": name[f"size_{k}"]}
                       for k in range(1, count + 1)]
            records.append({"count": count, "background": name["background"],
                            "axis": name["axis"] if count == 2 else None, "objects": objects})
        return records


@dataclass(frozen=True)
class FeatureTraining:
    """How the network is fitted: AdamW steps (cosine decay) on random batches; ``augment`` adds
    light noise and blur, as generated images have."""

    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    augment: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}: must be an integer >= 1")
        check_number("lr", self.lr, "must be a positive number", lambda v: v > 0)


def head_classes_of(labels: Sequence[Mapping[str, str]],
                    known: Optional[Mapping[str, Sequence[str]]] = None) -> Dict[str, Tuple[str, ...]]:
    """The heads and classes for ``labels`` (per image, head -> class name): ``known`` classes
    where given (a label outside them is a ``ValueError``), else the classes found, sorted. Heads
    in a fixed order: ``source``, the ShapeScenes heads, then the others by name."""
    found: Dict[str, set] = {}
    for label in labels:
        for head, name in label.items():
            found.setdefault(head, set()).add(str(name))
    order = sorted(found, key=lambda h: (-1 if h == SOURCE else SCENE_HEADS.index(h) if h in SCENE_HEADS
                                         else len(SCENE_HEADS), h))
    heads = {}
    for head in order:
        names = tuple(known[head]) if known and head in known else tuple(sorted(found[head]))
        unknown = sorted(found[head] - set(names))
        if unknown:
            raise ValueError(f"labels of head {head!r} include {unknown}, not among its classes {list(names)}")
        heads[head] = names
    return heads


def _targets(labels: Sequence[Mapping[str, str]], config: ImageFeatureConfig) -> torch.Tensor:
    """``int64 [N, heads]``: each label's class index, -1 where an image has no label for a head."""
    index = {h: {c: i for i, c in enumerate(cs)} for h, cs in config.head_classes.items()}
    rows = [[index[h].get(str(label[h]), -1) if h in label else -1 for h in config.heads] for label in labels]
    return torch.tensor(rows, dtype=torch.long).reshape(len(labels), len(config.heads))


def fit_image_features(images: np.ndarray, labels: Sequence[Mapping[str, str]],
                       training: FeatureTraining = FeatureTraining(), log: Callable[[str], None] = print,
                       config: ImageFeatureConfig = ImageFeatureConfig(),
                       classes: Optional[Mapping[str, Sequence[str]]] = None) -> ImageFeatureNet:
    """Train a network on ``uint8 [N, S, S, 3]`` ``images`` and their ``labels`` (per image, head
    -> class name; an image lacking a head is not counted in that head's loss). ``config`` gives
    the shape (its heads are those of the labels, with ``classes`` where given). Deterministic
    for ``training.seed``."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be a uint8 array [N, S, S, 3]; got {getattr(images, 'dtype', type(images))} "
                         f"{list(getattr(images, 'shape', []))}")
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need as many labels as images, and at least one: {len(images)} images, {len(labels)} labels")
    heads = head_classes_of(labels, classes)
    if not heads:
        raise ValueError("no image has a label: nothing to train the heads on")
    config = dataclasses.replace(config, image_size=images.shape[1], heads=tuple(heads), classes=tuple(heads.values()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        net = ImageFeatureNet(config)
    _train(net, torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2), _targets(labels, config),
           training, log)
    return net.eval()


def _train(net: ImageFeatureNet, images: torch.Tensor, targets: torch.Tensor, training: FeatureTraining, log) -> None:
    """AdamW on the sum of the heads' cross-entropies (each over the images labelled for it)."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=training.lr, weight_decay=1e-4)

    def lr_factor(step: int) -> float:  # 50 steps of warm-up, then a cosine decay to 0
        return min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(step / training.steps, 1.0)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    rng = np.random.default_rng([training.seed, 11])
    generator = torch.Generator().manual_seed(training.seed)
    net.train()
    start = time.perf_counter()
    with Progress("training image_features", training.steps, log=log, unit="steps") as tracker:
        for step in range(training.steps):
            chosen = torch.from_numpy(rng.integers(len(images), size=training.batch_size))
            x = images[chosen].float().div(127.5).sub(1.0)
            if training.augment:
                x = _augment(x, generator)
            loss = _loss(net.logits(net(x)), targets[chosen], net.config.heads)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            tracker.update(loss=float(loss.detach()))
    log(f"image_features: {training.steps} steps in {time.perf_counter() - start:.0f} s, "
        f"final loss {tracker.values.get('loss', float('nan')):.3f}")


def _loss(logits: Dict[str, torch.Tensor], targets: torch.Tensor, heads: Sequence[str]) -> torch.Tensor:
    """Sum over heads of the mean cross-entropy over the images labelled for each (0 for none)."""
    return sum(F.cross_entropy(logits[head], targets[:, i], ignore_index=-1, reduction="sum")
               / (targets[:, i] >= 0).sum().clamp(min=1) for i, head in enumerate(heads))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image, a random blend with its 3x3 box blur and Gaussian noise of a random strength."""
    n = len(x)
    blend = torch.rand(n, 1, 1, 1, generator=generator) * (torch.rand(n, 1, 1, 1, generator=generator) < 0.5)
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    noise = torch.randn(x.shape, generator=generator) * torch.rand(n, 1, 1, 1, generator=generator) * 0.06
    return (x + blend * (blurred - x) + noise).clamp(-1, 1)


def feature_accuracy(net: ImageFeatureNet, images: np.ndarray, labels: Sequence[Mapping[str, str]]) -> Dict[str, float]:
    """Held-out accuracy per head (over the images labelled for it; heads with none are left
    out) and ``shapescenes_all``: the share of ShapeScenes images with every scene head right."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    predicted = net.predict(images)
    scores = {}
    for head in net.heads:
        pairs = [(p[head], str(t[head])) for p, t in zip(predicted, labels) if head in t]
        if pairs:
            scores[head] = float(np.mean([a == b for a, b in pairs]))
    scenes = [all(p.get(h) == str(t[h]) for h in SCENE_HEADS) for p, t in zip(predicted, labels)
              if all(h in t for h in SCENE_HEADS)]
    if scenes and all(h in net.heads for h in SCENE_HEADS):
        scores["shapescenes_all"] = float(np.mean(scenes))
    return scores
