"""Two processes (gloo, CPU) save and load one checkpoint: each rank keeps its own per-rank
state, every rank agrees on ``latest()``, and FSDP2's sharded parameters round-trip exactly."""

import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mot import ModelConfig
from mot.io import CheckpointError
from mot.model import build_model
from mot.runs.checkpoints import CheckpointManager, load_model_optimizer_state, model_optimizer_state
from mot.train.optim import clip_gradients

from tests.helpers import gloo_rank, random_batch

WORLD_SIZE = 2
TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")


def build(seed, shard=False):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2))
    if shard:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (WORLD_SIZE,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def local(tensor):
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def replicas(rank, directory):
    """A plain model, the same on both ranks: save twice (keep_last=1), find, load, then damage."""
    model, optimizer = build(seed=0)
    tokens, modalities = random_batch(model.config, seed=1)
    model(tokens, modalities).logits.logsumexp(-1).mean().backward()
    optimizer.step()
    manager = CheckpointManager(directory, keep_last=1)
    manager.save(1, {**model_optimizer_state(model, optimizer), "step": 1}, per_rank={"rank": rank})
    path = manager.save(2, {**model_optimizer_state(model, optimizer), "step": 2}, per_rank={"rank": rank})

    latest, problems = manager.latest()
    assert (latest, problems) == (path, []), (latest, problems)
    fresh, fresh_optimizer = build(seed=1)
    state = {**model_optimizer_state(fresh, fresh_optimizer), "step": 0}
    assert manager.load(latest, state) == {"rank": rank}
    load_model_optimizer_state(fresh, fresh_optimizer, state)
    assert state["step"] == 2
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(optimizer.state.values(), fresh_optimizer.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)

    # rank 0 checks the hashes and every rank gets its verdict
    dist.barrier()
    if rank == 0:
        (latest / "rank-00001.pt").write_bytes(b"damaged")
    dist.barrier()
    restarted = CheckpointManager(directory)
    found, problems = restarted.latest()
    assert found is None and len(problems) == 1 and "rank-00001.pt" in problems[0], problems
    try:
        restarted.load(latest, state)
    except CheckpointError as error:
        assert "rank-00001.pt" in str(error), str(error)
    else:
        raise AssertionError("a damaged checkpoint was loaded")


def fsdp2_shards(rank, directory):
    """FSDP2: the global gradient norm equals the unsharded one, and the shards round-trip."""
    reference, _ = build(seed=0)
    model, optimizer = build(seed=0, shard=True)
    tokens, modalities = random_batch(model.config, seed=1)
    for m in (reference, model):
        m(tokens, modalities).logits.logsumexp(-1).mean().backward()
    expected = torch.nn.utils.get_total_norm([p.grad for p in reference.parameters()])
    norm = clip_gradients(model, max_norm=0.01)
    torch.testing.assert_close(norm, expected)
    optimizer.step()

    manager = CheckpointManager(directory)
    path = manager.save(1, model_optimizer_state(model, optimizer), per_rank={"rank": rank})
    fresh, fresh_optimizer = build(seed=1, shard=True)
    state = model_optimizer_state(fresh, fresh_optimizer)
    assert manager.load(path, state) == {"rank": rank}
    load_model_optimizer_state(fresh, fresh_optimizer, state)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(local(a), local(b))
    for a, b in zip(optimizer.state.values(), fresh_optimizer.state.values()):
        assert all(torch.equal(local(a[k]), local(b[k])) for k in a)


def worker(rank, scenario, store_path, directory):
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, WORLD_SIZE)
    with gloo_rank(rank, WORLD_SIZE, store=store, timeout=timedelta(seconds=TIMEOUT_S)):
        scenario(rank, directory)


@pytest.mark.parametrize("scenario", [replicas, fsdp2_shards], ids=["replicas", "fsdp2"])
def test_two_ranks_save_and_load_one_checkpoint(tmp_path, scenario):
    context = mp.start_processes(worker, args=(scenario, str(tmp_path / "store"), str(tmp_path / "run")),
                                 nprocs=WORLD_SIZE, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):  # join raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail(f"the workers did not finish within {TIMEOUT_S} s")
    [saved] = (tmp_path / "run").iterdir()
    files = {p.name for p in saved.iterdir()}
    assert {"rank-00000.pt", "rank-00001.pt", "complete.json", ".metadata"} <= files
