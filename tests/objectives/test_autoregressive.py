"""The next-token loss: its mean, its per-modality split, and the edge cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from mot.objectives import IGNORE_INDEX, next_token_loss, per_modality_mean

from tests.helpers import SYNCING_OPS, RecordOps


def make_batch(batch=3, length=20, vocab=11, modalities=3, seed=0, ignore_fraction=0.3):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=generator) * 3
    targets = torch.randint(0, vocab, (batch, length), generator=generator)
    targets[torch.rand(batch, length, generator=generator) < ignore_fraction] = IGNORE_INDEX
    modality_ids = torch.randint(0, modalities, (batch, length), generator=generator)
    return logits, targets, modality_ids


def test_total_is_the_mean_cross_entropy_over_trained_positions():
    logits, targets, modality_ids = make_batch()
    loss = next_token_loss(logits, targets, modality_ids, 3)
    expected = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    assert loss.total.dtype == torch.float32 and loss.total.shape == ()
    torch.testing.assert_close(loss.total, expected, rtol=1e-6, atol=1e-6)


def test_per_modality_sums_and_counts_match_a_loop():
    logits, targets, modality_ids = make_batch(seed=1)
    loss = next_token_loss(logits, targets, modality_ids, 3)
    sums, counts = [0.0] * 3, [0] * 3
    for b in range(targets.shape[0]):
        for i in range(targets.shape[1]):
            if targets[b, i] != IGNORE_INDEX:
                m = int(modality_ids[b, i])
                sums[m] += F.cross_entropy(logits[b, i], targets[b, i]).item()
                counts[m] += 1
    assert loss.count_per_modality.dtype == torch.int64
    assert loss.count_per_modality.tolist() == counts
    torch.testing.assert_close(loss.sum_per_modality, torch.tensor(sums), rtol=1e-5, atol=1e-5)
    # the parts add up to the whole
    torch.testing.assert_close(loss.sum_per_modality.sum() / loss.count_per_modality.sum(), loss.total)


def test_an_absent_modality_gets_zero_sum_and_zero_count():
    logits, targets, modality_ids = make_batch(seed=2)
    modality_ids = modality_ids.clamp(max=1)  # modality 2 never occurs
    loss = next_token_loss(logits, targets, modality_ids, 3)
    assert loss.sum_per_modality[2].item() == 0.0 and loss.count_per_modality[2].item() == 0
    assert per_modality_mean(loss.sum_per_modality, loss.count_per_modality)[2] is None


def test_positions_of_a_modality_that_are_all_ignored_count_zero():
    logits, targets, modality_ids = make_batch(seed=3, modalities=2)
    targets[modality_ids == 1] = IGNORE_INDEX
    loss = next_token_loss(logits, targets, modality_ids, 2)
    assert loss.count_per_modality[1].item() == 0 and loss.sum_per_modality[1].item() == 0.0
    assert loss.count_per_modality[0].item() == int((targets != IGNORE_INDEX).sum())


def test_bf16_logits_are_reduced_in_fp32():
    logits, targets, modality_ids = make_batch(seed=4)
    low = logits.bfloat16().requires_grad_()
    loss = next_token_loss(low, targets, modality_ids, 3)
    assert loss.total.dtype == torch.float32 and loss.sum_per_modality.dtype == torch.float32
    expected = F.cross_entropy(low.detach().float().reshape(-1, 11), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss.total, expected, rtol=1e-6, atol=1e-6)
    loss.total.backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()


def test_an_all_ignored_batch_gives_zero_loss_and_zero_gradients():
    logits, targets, modality_ids = make_batch(seed=5)
    logits.requires_grad_()
    targets = torch.full_like(targets, IGNORE_INDEX)
    loss = next_token_loss(logits, targets, modality_ids, 3)
    assert loss.total.item() == 0.0
    assert loss.count_per_modality.tolist() == [0, 0, 0] and loss.sum_per_modality.tolist() == [0.0] * 3
    loss.total.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    assert per_modality_mean(loss.sum_per_modality, loss.count_per_modality) == [None, None, None]


def test_gradient_equals_the_gradient_of_the_reference_mean():
    logits, targets, modality_ids = make_batch(seed=6)
    ours = logits.clone().requires_grad_()
    next_token_loss(ours, targets, modality_ids, 3).total.backward()
    reference = logits.clone().requires_grad_()
    F.cross_entropy(reference.reshape(-1, 11), targets.reshape(-1), ignore_index=IGNORE_INDEX).backward()
    torch.testing.assert_close(ours.grad, reference.grad)


def test_no_host_sync():
    logits, targets, modality_ids = make_batch(seed=7)
    logits.requires_grad_()
    recorder = RecordOps()
    with recorder:
        loss = next_token_loss(logits, targets, modality_ids, 3)
        loss.total.backward()
    assert recorder.names and not SYNCING_OPS & set(recorder.names)
    assert not recorder.bool_indexing


def test_per_modality_mean_divides_where_there_are_positions():
    means = per_modality_mean(torch.tensor([6.0, 0.0, 1.5]), torch.tensor([3, 0, 1]))
    assert means[1] is None
    assert math.isclose(means[0], 2.0) and math.isclose(means[2], 1.5)


def test_mismatched_shapes_are_rejected():
    logits, targets, modality_ids = make_batch()
    with pytest.raises(ValueError, match=r"must agree on \[B, L\]"):
        next_token_loss(logits, targets[:, 1:], modality_ids, 3)


def test_a_non_finite_loss_stays_in_its_modality():
    logits, targets, modality_ids = make_batch(seed=8, modalities=3, ignore_fraction=0.0)
    logits[modality_ids == 1] = float("nan")
    loss = next_token_loss(logits, targets, modality_ids, 3)
    assert torch.isnan(loss.sum_per_modality[1]) and torch.isnan(loss.total)
    assert torch.isfinite(loss.sum_per_modality[[0, 2]]).all()


def test_non_finite_logits_at_ignored_positions_do_not_count():
    logits, targets, modality_ids = make_batch(seed=9)
    logits[targets == IGNORE_INDEX] = float("nan")
    loss = next_token_loss(logits, targets, modality_ids, 3)
    assert torch.isfinite(loss.total) and torch.isfinite(loss.sum_per_modality).all()
