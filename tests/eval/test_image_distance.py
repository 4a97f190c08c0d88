"""FID and KID over the feature network (torchmetrics with a custom feature extractor): zero for a
set against itself, growing with the noise added, deterministic, and clear errors."""

import numpy as np
import pytest
import torch

from mot.data.prepare.evaluation_sets import labels_of
from mot.data.sources.shapescenes import shapescenes
from mot.eval.image_distance import image_distances
from mot.tokenizers.image_features import FeatureTraining, ImageFeatureConfig, ImageFeatureNet, fit_image_features

NOISE_LEVELS = (16, 32, 64, 128)  # standard deviations, in uint8 levels


@pytest.fixture(scope="module")
def real():
    return np.stack([d.segments[0].array for d in shapescenes(160, seed=2)])


@pytest.fixture(scope="module")
def other(real):
    """Other scenes of the same distribution: KID's subsets assume the two sets independent."""
    return np.stack([d.segments[0].array for d in shapescenes(160, seed=2, start=160)])


@pytest.fixture(scope="module")
def net(real):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    documents = list(shapescenes(300, seed=3))
    yield fit_image_features(np.stack([d.segments[0].array for d in documents]), [labels_of(d) for d in documents],
                             FeatureTraining(steps=20, batch_size=64), log=lambda _: None)
    torch.set_num_threads(threads)


def noisy(images, sigma, seed=0):
    noise = np.random.default_rng(seed).normal(0, sigma, images.shape)
    return np.clip(np.rint(images + noise), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def distances(net, real, other):
    return [image_distances(real, noisy(other, sigma), net, kid_subset_size=100, kid_subsets=20)
            for sigma in (0, *NOISE_LEVELS)]


def test_a_set_against_itself_is_at_distance_zero(net, real, distances):
    itself = image_distances(real, real, net, kid_subset_size=100, kid_subsets=20)
    assert abs(itself["fid"]) < 1e-3 * distances[-1]["fid"]
    assert itself["real"] == itself["generated"] == 160
    same_distribution = distances[0]  # other scenes: KID near 0 and well under that of any noise
    assert abs(same_distribution["kid"]) < 0.1 * distances[-1]["kid"]


def test_distances_grow_with_the_noise(distances):
    fids, kids = [d["fid"] for d in distances], [d["kid"] for d in distances[1:]]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids  # from no noise at all
    assert all(a < b for a, b in zip(kids, kids[1:])), kids
    assert all(d["kid_std"] >= 0 for d in distances)


def test_the_same_inputs_and_seed_give_the_same_numbers(net, real, other, distances):
    again = image_distances(real, noisy(other, 0), net, kid_subset_size=100, kid_subsets=20)
    assert again == distances[0]
    other_seed = image_distances(real, noisy(other, 0), net, kid_subset_size=100, kid_subsets=20, seed=1)
    assert other_seed["fid"] == again["fid"] and other_seed["kid"] != again["kid"]


def test_sets_of_different_sizes_are_compared(net, real):
    result = image_distances(real, real[:40], net)  # KID's subsets: the smaller set's size by default
    assert result["generated"] == 40 and np.isfinite(result["fid"]) and np.isfinite(result["kid"])


def test_bad_inputs_are_refused(net, real):
    with pytest.raises(ValueError, match="at least 2 images, got 1"):
        image_distances(real, real[:1], net)
    with pytest.raises(ValueError, match="uint8"):
        image_distances(real.astype(np.float32), real, net)
    with pytest.raises(ValueError, match=r"shape \[N, S, S, 3\]"):
        image_distances(real, real.transpose(0, 3, 1, 2), net)
    small = np.zeros((4, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="16x16, but the feature network reads 32x32"):
        image_distances(real, small, net)
    with pytest.raises(ValueError, match="32x32, but the feature network reads 16x16"):
        image_distances(real, real, ImageFeatureNet(ImageFeatureConfig(image_size=16)))
    with pytest.raises(ValueError, match="kid_subset_size=200"):
        image_distances(real, real, net, kid_subset_size=200)
