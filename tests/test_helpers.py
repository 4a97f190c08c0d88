"""The helpers the multi-rank tests stand on: a spawned gloo rank leaves cleanly when its body
passes and reports the traceback when it fails (its ``os._exit`` must not swallow a failure)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers import gloo_rank

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _body(rank, store_path, out, fail):
    torch.set_num_threads(1)
    with gloo_rank(rank, 2, store=dist.FileStore(store_path, 2)):
        total = torch.tensor([rank + 1.0])
        dist.all_reduce(total)
        if fail:  # every rank, so that no rank waits at the barrier for a failed one
            raise ValueError(f"rank {rank}'s body failed after its all-reduce")
        torch.save(total, f"{out}-{rank}.pt")


def test_a_passing_body_leaves_with_its_work_done(tmp_path):
    mp.spawn(_body, args=(str(tmp_path / "store"), str(tmp_path / "sum"), False), nprocs=2, join=True)
    assert [torch.load(tmp_path / f"sum-{rank}.pt").item() for rank in (0, 1)] == [3.0, 3.0]


def test_a_failing_body_reaches_the_parent_with_its_traceback(tmp_path):
    with pytest.raises(mp.ProcessRaisedException, match="body failed after its all-reduce"):
        mp.spawn(_body, args=(str(tmp_path / "store"), str(tmp_path / "sum"), True), nprocs=2, join=True)
