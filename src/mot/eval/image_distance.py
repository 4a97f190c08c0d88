"""FID and KID between real and generated images, over the features of the corpus's own feature
network (:class:`~mot.tokenizers.image_features.ImageFeatureNet`, trained by ``mot prepare``),
so nothing is downloaded.

Both are computed by torchmetrics (``FrechetInceptionDistance`` and ``KernelInceptionDistance``
with the network as a custom feature extractor); the numbers are on the network's feature scale,
so compare them between generators measured with the same network (the same fingerprint), not
with Inception FIDs. Both are estimates from samples: two sets of real images of the same
distribution are apart by a floor that shrinks with their size (measure it, e.g. valid against
train images, and compare sets of one size). KID assumes the two sets are independent samples: a
set against itself or against its own reconstructions comes out slightly below 0.
"""

from __future__ import annotations

import warnings
from typing import Dict, Optional

import numpy as np
import torch

from ..tokenizers.image_features import ImageFeatureNet

#: images per call of the feature network
BATCH = 256
#: KID's default subset size (torchmetrics', capped by the sizes of the two sets)
KID_SUBSET_SIZE = 1000


def _checked(name: str, images: np.ndarray, size: int) -> torch.Tensor:
    """``uint8 [N, S, S, 3]`` -> ``uint8 [N, 3, S, S]``, or a ``ValueError`` naming what is wrong."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError(f"{name} images must be a uint8 numpy array [N, {size}, {size}, 3], got "
                         f"{getattr(images, 'dtype', type(images).__name__)}")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{name} images must have shape [N, S, S, 3], got {list(images.shape)}")
    if images.shape[1] != size:
        raise ValueError(f"{name} images are {images.shape[1]}x{images.shape[2]}, but the feature network reads "
                         f"{size}x{size} images")
    if len(images) < 2:
        raise ValueError(f"{name} images: FID and KID need at least 2 images, got {len(images)}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def image_distances(real: np.ndarray, generated: np.ndarray, features: ImageFeatureNet,
                    kid_subset_size: Optional[int] = None, seed: int = 0, kid_subsets: int = 100) -> Dict[str, float]:
    """``fid``, ``kid`` and ``kid_std`` between ``real`` and ``generated`` (``uint8 [N, S, S, 3]``
    each, any two sizes of at least 2), over ``features``' features. KID averages ``kid_subsets``
    random subsets of ``kid_subset_size`` (default: 1000, or the smaller set's size) drawn with
    ``seed``: the same inputs give the same numbers."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    size = features.config.image_size
    real_images, generated_images = _checked("real", real, size), _checked("generated", generated, size)
    subset = kid_subset_size or min(KID_SUBSET_SIZE, len(real_images), len(generated_images))
    if subset > min(len(real_images), len(generated_images)) or subset < 2:
        raise ValueError(f"kid_subset_size={subset}: must be between 2 and the smaller set's size "
                         f"({min(len(real_images), len(generated_images))})")
    was_training = features.training
    features.eval()
    device = next(features.parameters()).device
    try:
        with warnings.catch_warnings():  # KID says it keeps every feature in memory: a few MB here
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
            fid = FrechetInceptionDistance(feature=features, normalize=False).to(device)
            kid = KernelInceptionDistance(feature=features, subsets=kid_subsets, subset_size=subset,
                                          normalize=False).to(device)
        for images, real_side in ((real_images, True), (generated_images, False)):
            for start in range(0, len(images), BATCH):
                batch = images[start:start + BATCH].to(device)
                fid.update(batch, real=real_side)
                kid.update(batch, real=real_side)
        with torch.random.fork_rng(devices=[]):  # KID draws its subsets with torch's global generator
            torch.manual_seed(seed)
            kid_mean, kid_std = kid.compute()
        return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std),
                "real": len(real_images), "generated": len(generated_images)}
    finally:
        features.train(was_training)
