"""The FSDP2 communication model: its formulas against section 6.1's parameter counts, its step
times, and its bytes against what FSDP2 actually sends on 2 gloo ranks."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mot.config import ConfigError
from mot.model.accounting import (block_parameters, count_parameters, paper_moe_added_params_per_layer,
                                  paper_mot_added_params_per_layer)
from mot.model.transformer import build_model
from mot.presets import architecture_fields, get_preset
from mot.train.communication import (Cluster, Sharding, bytes_per_step, collectives_per_step, counting_sent_bytes,
                                     markdown, predict, predict_series, sharding)
from mot.train.distributed import DistributedContext, shard_model

from tests.helpers import gloo_rank, random_batch, tiny_config

TWO = ["text", "image"]


def tokens_to_hide(model, seq_len, ranks, cluster):
    """What :func:`predict` says of the tokens that hide the communication (tokens per GPU do not change it)."""
    return predict(model, seq_len, 1, ranks, cluster).tokens_to_hide


def config(architecture, d=32, **fields):
    """A small model of ``architecture``, FFN of width ``d`` and no QK-norm (the paper's section 6.1)."""
    return tiny_config(d_model=d, ffn_hidden=d, qk_norm=False, modalities=TWO,
                       **architecture_fields(architecture, TWO), **fields)


def test_block_and_root_parameters_are_what_the_built_model_holds():
    for architecture in ("dense", "mot", "moe4x"):
        model = build_model(config(architecture), device="meta")
        blocks = sum(p.numel() for name, p in model.named_parameters() if name.startswith("blocks."))
        assert block_parameters(config(architecture)) == blocks
        assert sharding(config(architecture)).total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("d", [32, 64])
def test_what_mot_and_moe_add_to_the_sharded_blocks_is_section_6_1s_count(d):
    """Norms aside (the paper ignores them: one vector per tower), MoT adds 7(K-1)d^2 per layer and
    MoE-4x 3(E-1)d^2 + Ed to what FSDP2 gathers, and the root (embeddings, head) is unchanged."""
    dense, mot, moe = (sharding(config(a, d)) for a in ("dense", "mot", "moe4x"))
    layers = config("dense", d).n_layers
    mot_norms = layers * 2 * d * (len(TWO) - 1)  # a second tower's attention and FFN norm weights
    assert mot.blocks - dense.blocks - mot_norms == layers * paper_mot_added_params_per_layer(d, len(TWO))
    assert moe.blocks - dense.blocks == layers * paper_moe_added_params_per_layer(d, 4)
    assert mot.root - dense.root == d * (len(TWO) - 1)  # one more final norm; the embedding is shared
    assert moe.root == dense.root


def test_bytes_per_step_follow_the_ring_collectives():
    parts = Sharding(blocks=1000, root=100)
    assert bytes_per_step(parts, 1) == 0  # alone: nothing to gather
    # 2 ranks: half of the blocks gathered twice, the root once, every gradient reduce-scattered
    assert bytes_per_step(parts, 2, param_bytes=2, grad_bytes=4) == 0.5 * (2 * (2 * 1000 + 100) + 4 * 1100)
    assert bytes_per_step(parts, 256) == pytest.approx(255 / 256 * (4 * 2100 + 4 * 1100))
    with pytest.raises(ValueError, match="ranks=0"):
        bytes_per_step(parts, 0)


def test_the_papers_sizes_move_their_parameters_and_pay_for_them_only_across_nodes():
    cluster = Cluster()
    configs = {a: get_preset(f"chameleon-443m-{a}") for a in ("dense", "mot", "moe4x")}
    rows = predict_series(configs, 4096, 8192, [1, 8, 16, 256], cluster)
    for label, row in rows.items():
        assert row[0].bytes_per_rank == 0 and row[0].parameters == count_parameters(configs[label]).total
        assert row[0].step_seconds == row[0].compute_seconds  # alone: compute only
        assert row[1].step_seconds == row[0].step_seconds  # NVLink: hidden behind compute
        assert row[2].step_seconds > row[1].step_seconds  # across nodes: exposed
    # equal FLOPs, so equal compute; the bytes grow with the parameters, the blocks' (gathered twice) most
    assert rows["mot"][0].compute_seconds == pytest.approx(rows["dense"][0].compute_seconds, rel=1e-9)
    ratio = rows["mot"][3].bytes_per_rank / rows["dense"][3].bytes_per_rank
    parts = {label: sharding(c) for label, c in configs.items()}
    assert parts["mot"].total / parts["dense"].total < ratio < parts["mot"].blocks / parts["dense"].blocks
    assert rows["dense"][3].step_seconds < rows["mot"][3].step_seconds < rows["moe4x"][3].step_seconds
    text = "\n".join(markdown("443M", rows, "dense", cluster, 4096, 8192))
    assert "| mot | 751M |" in text and "(1.00x)" in text and "256 GPUs" in text


def test_the_step_time_hides_what_overlap_allows():
    model = get_preset("chameleon-443m-dense")
    none = predict(model, 4096, 8192, 16, Cluster(overlap=0.0))
    full = predict(model, 4096, 8192, 16, Cluster(overlap=1.0))
    # bytes over the node's network share plus 3 collectives per block and 2 for the root
    link = Cluster().inter_node_gbytes * 1e9 / Cluster().gpus_per_node
    assert none.communication_seconds == pytest.approx(none.bytes_per_rank / link + (3 * 24 + 2) * 50e-6)
    assert none.step_seconds == pytest.approx(none.compute_seconds + none.communication_seconds)
    assert full.step_seconds == pytest.approx(max(full.compute_seconds, full.communication_seconds))
    assert none.exposed_seconds == pytest.approx(none.communication_seconds)
    assert tokens_to_hide(model, 4096, 16, Cluster(overlap=0.0)) is None
    tokens = tokens_to_hide(model, 4096, 16, Cluster(overlap=0.5))  # with that many, nothing is exposed
    assert predict(model, 4096, round(tokens) + 1, 16, Cluster(overlap=0.5)).exposed_seconds == 0
    assert predict(model, 4096, round(tokens) - 100, 16, Cluster(overlap=0.5)).exposed_seconds > 0


def test_mot_analyze_fsdp_prints_and_writes_the_table(tmp_path, capsys):
    from mot.cli import main

    out = tmp_path / "fsdp.md"
    assert main(["analyze", "fsdp", "--config", "chameleon-443m-mot", "--gpus", "1,16", "--out", str(out),
                 "overlap=0"]) == 0
    text = out.read_text()
    assert "| dense | 443M |" in text and "| 1 GPU | 16 GPUs |" in text and "overlap=0.0" in text
    assert main(["analyze", "fsdp", "--config", "chameleon-443m-mot", "overlap=2"]) == 2
    assert "overlap" in capsys.readouterr().err


@pytest.mark.parametrize("fields, message", [({"overlap": 1.5}, "overlap"), ({"gpus_per_node": 0}, "gpus_per_node"),
                                             ({"compute_efficiency": 0.0}, "compute_efficiency"),
                                             ({"inter_node_gbytes": float("nan")}, "inter_node_gbytes"),
                                             ({"param_bytes": 2.5}, "param_bytes"),
                                             ({"latency_us": -1.0}, "latency_us")])
def test_bad_cluster_assumptions_are_named(fields, message):
    with pytest.raises(ConfigError, match=message):
        Cluster(**fields)


# ------------------------------------------------- against what FSDP2 sends on 2 gloo ranks --

def _worker(rank, port, architectures, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    with gloo_rank(rank, 2):
        sent = {}
        for architecture in architectures:
            torch.manual_seed(0)
            model = shard_model(build_model(config(architecture)), DistributedContext(rank, 2, torch.device("cpu")))
            tokens, modalities = random_batch(config(architecture), batch=2, length=16, seed=rank)
            with counting_sent_bytes() as counter:
                model(tokens, modalities).logits.float().sum().backward()
            sent[architecture] = (counter.bytes, counter.collectives)
            dist.barrier()
        if rank == 0:
            torch.save(sent, out)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_the_bytes_are_what_fsdp2_sends_in_a_training_step(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    architectures = ("dense", "mot", "moe4x")
    mp.spawn(_worker, args=(port, architectures, tmp_path / "sent.pt"), nprocs=2, join=True)
    sent = torch.load(tmp_path / "sent.pt")
    for architecture in architectures:
        predicted = bytes_per_step(sharding(config(architecture)), 2)
        counted, collectives = sent[architecture]
        # FSDP2 pads each parameter's first dimension to a multiple of the rank count: a few rows at most
        assert counted == pytest.approx(predicted, rel=0.01), architecture
        assert collectives == collectives_per_step(config(architecture)), architecture
