"""FSDP2 on 2 CPU processes (gloo) against one process with the same global batch; a rank whose
batches hold no image token."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mot.data.loader import Loader
from mot.data.settings import open_corpus
from mot.runs.metrics import read_metrics
from mot.runs.recipe import load_recipe
from mot.train.distributed import DistributedContext
from mot.train.trainer import Trainer

from tests.helpers import gloo_rank, prepare_corpus_with_words

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")
STEPS = 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return prepare_corpus_with_words(out, 40)


def recipe(corpus, runs, grad_accum, extra=None):
    overrides = {"name": "run", "out_dir": str(runs), "data.corpus": str(corpus), "data.seq_len": 96,
                 "data.batch_rows": 2, "data.grad_accum": grad_accum, "data.valid_batches": 1,
                 "model.d_model": 32, "model.n_layers": 2, "model.n_heads": 4, "model.max_seq_len": 96,
                 "optim.lr": 1e-2, "optim.warmup_steps": 1, "optim.total_steps": STEPS, "steps": STEPS,
                 "log_every": 1, "eval_every": STEPS, "checkpoint_every": STEPS, **(extra or {})}
    return load_recipe(None, [f"{k}={v}" for k, v in overrides.items()])


def rank_loader(corpus, rank, shards):
    """Rank ``rank`` of 2 reads ``shards[rank]`` (both ranks read the same shard to compare runs)."""
    source = open_corpus(corpus)
    layout = source.layout("chameleon")
    from mot.data.shards import ShardReader

    reader = ShardReader(corpus / shards[rank], layout)
    return Loader([(shards[rank], reader, 1.0)], layout=layout, seq_len=96, batch_rows=2,
                  modality_tower_index=[0, 1], seed=0, rank=rank, world_size=2)


class Interleaved:
    """One process standing in for two ranks: micro-batch k comes from rank k's loader."""

    def __init__(self, loaders):
        self.loaders, self.turn = loaders, 0

    def __next__(self):
        batch = next(self.loaders[self.turn])
        self.turn = (self.turn + 1) % len(self.loaders)
        return batch

    def state_dict(self):
        return {"turn": self.turn, "loaders": [loader.state_dict() for loader in self.loaders]}


def _worker(rank, port, corpus, runs, shards, extra=None):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    with gloo_rank(rank, 2):
        context = DistributedContext(rank, 2, torch.device("cpu"))
        trainer = Trainer(recipe(corpus, runs, grad_accum=1, extra=extra), context=context, log=lambda _: None,
                          train_loader=rank_loader(corpus, rank, shards))
        trainer.train()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_losses(run_dir):
    return [(r["loss"], r["loss_per_modality"]) for r in read_metrics(run_dir) if r["kind"] == "train"]


def test_two_fsdp_ranks_match_one_process_with_the_same_global_batch(corpus, tmp_path):
    shards = ["shards/shapescenes-train", "shards/shapescenes-train"]
    mp.spawn(_worker, args=(_free_port(), corpus, tmp_path / "two", shards), nprocs=2, join=True)
    torch.set_num_threads(1)
    single = Trainer(recipe(corpus, tmp_path / "one", grad_accum=2), log=lambda _: None,
                     train_loader=Interleaved([rank_loader(corpus, r, shards) for r in (0, 1)]))
    single.train()
    two, one = train_losses(tmp_path / "two" / "run"), train_losses(tmp_path / "one" / "run")
    assert len(two) == len(one) == STEPS
    for (loss_two, per_two), (loss_one, per_one) in zip(two, one):
        assert abs(loss_two - loss_one) < 1e-5
        for modality in ("text", "image"):
            assert abs(per_two[modality] - per_one[modality]) < 1e-5
    assert one[-1][0] < one[0][0]


def test_a_rank_without_image_tokens_neither_hangs_nor_desynchronizes(corpus, tmp_path):
    shards = ["shards/shapescenes-train", "shards/words-train"]  # rank 1 reads text only
    mp.spawn(_worker, args=(_free_port(), corpus, tmp_path, shards), nprocs=2, join=True, )
    losses = train_losses(tmp_path / "run")
    assert len(losses) == STEPS and all(per["image"] is not None for _, per in losses)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [f"step-{STEPS:08d}"]


def test_a_frozen_tower_stays_frozen_under_fsdp(corpus, tmp_path):
    """Frozen parameters and zeroed embedding rows (DTensor gradients) on 2 ranks: the text tower and
    the text rows are bitwise unchanged, the image tower trained, and the checkpoint loads."""
    from mot.model.transformer import build_model
    from mot.runs.model import load_run_model
    from mot.runs.resolve import resolve_recipe

    extra = {"freeze": "[text]", "model.untied": "[ffn,attention,norms,head]"}
    shards = ["shards/shapescenes-train", "shards/words-train"]
    mp.spawn(_worker, args=(_free_port(), corpus, tmp_path, shards, extra), nprocs=2, join=True)
    resolved, corpus_ = resolve_recipe(recipe(corpus, tmp_path, grad_accum=1, extra=extra))
    torch.manual_seed(resolved.seed)  # the trainer's initial weights
    before = build_model(resolved.model).state_dict()
    after = load_run_model(tmp_path / "run", log=lambda _: None)[1].state_dict()
    text_rows = torch.from_numpy(corpus_.layout("chameleon").modality_table() == 0)
    assert all(torch.equal(before[n], after[n]) for n in before if ".towers.text." in n)
    assert all(not torch.equal(before[n], after[n]) for n in before if ".towers.image." in n)
    assert torch.equal(before["embed.weight"][text_rows], after["embed.weight"][text_rows])
