"""The routing plan and the split/merge of the residual stream by tower."""

import torch

from mot.model.routing import build_routing_plan, merge_towers, split_by_tower

from tests.helpers import RecordOps


def test_plan_groups_tokens_by_tower_keeping_sequence_order():
    modalities = torch.tensor([[0, 1, 1, 2], [2, 0, 1, 0]])
    plan = build_routing_plan(modalities, [0, 1, 0])  # modality 2 shares tower 0 with modality 0
    assert plan.tower_counts == (5, 3)
    assert plan.order.tolist() == [0, 3, 4, 5, 7, 1, 2, 6]
    assert [i.tolist() for i in plan.tower_indices] == [[0, 3, 4, 5, 7], [1, 2, 6]]
    assert plan.order[plan.inverse_order].tolist() == list(range(8))  # the inverse permutation


def test_a_tower_without_tokens_has_an_empty_part():
    plan = build_routing_plan(torch.zeros(2, 3, dtype=torch.long), [0, 1, 2])
    assert plan.tower_counts == (6, 0, 0) and not plan.single_tower
    parts = split_by_tower(torch.arange(6.0)[:, None], plan)
    assert [p.shape[0] for p in parts] == [6, 0, 0]


def test_split_and_merge_are_inverse_and_adjoint():
    torch.manual_seed(0)
    modalities = torch.randint(0, 3, (3, 7))
    plan = build_routing_plan(modalities, [0, 1, 2])
    x = torch.randn(21, 5, requires_grad=True)
    parts = split_by_tower(x, plan)
    for tower, part in enumerate(parts):
        assert torch.equal(part, x[modalities.reshape(-1) == tower])
    assert torch.equal(merge_towers(parts, plan), x)
    weights = torch.randn(21, 5)
    (merge_towers([p * 2 for p in parts], plan) * weights).sum().backward()
    assert torch.equal(x.grad, 2 * weights)


def test_a_dense_plan_does_not_reorder():
    plan = build_routing_plan(torch.randint(0, 3, (2, 5)), [0, 0, 0])
    assert plan.single_tower
    x = torch.randn(10, 4)
    (part,) = split_by_tower(x, plan)
    assert part is x and merge_towers([x], plan) is x


def test_split_and_merge_write_nothing_in_place():
    """torch 2.11's compiler misroutes the gradient of an autograd.Function that writes in place
    into its output (pytorch/pytorch#180642); both directions, forward and backward, must create
    their results rather than fill them (see routing.py)."""
    plan = build_routing_plan(torch.randint(0, 3, (2, 9)), [0, 1, 2])
    x = torch.randn(18, 4, requires_grad=True)
    recorder = RecordOps()
    with recorder:
        merged = merge_towers([part * 1.0 for part in split_by_tower(x, plan)], plan)
        merged.sum().backward()
    assert not recorder.mutating, f"written in place: {recorder.mutating}"
    assert torch.equal(x.grad, torch.ones_like(x))
