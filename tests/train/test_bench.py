"""``mot bench``: its arithmetic (tokens/s, achieved FLOP/s, MFU), its batches, its CLI and errors."""

import json
import random
from collections import Counter

import pytest
import torch

from mot.cli import main
from mot.config import ConfigError
from mot.model.accounting import flops_per_token
from mot.presets import resolve_model_config
from mot.train.bench import (BenchResult, BenchSettings, architecture_config, device_peak,
                             interleaved_modalities, mfu)

TINY = ["d_model=32", "n_layers=1", "n_heads=2", "vocab_size=512"]


def test_the_arithmetic_of_a_step():
    result = BenchResult("mot", parameters=10, flops_per_token=3e6, step_ms=[40.0, 50.0, 200.0])
    summary = result.summary(tokens_per_step=4096, peak=1e12)
    assert summary["median_step_ms"] == 50.0
    assert summary["tokens_per_second"] == pytest.approx(4096 / 0.05)
    assert summary["flops_per_second"] == pytest.approx(3e6 * 4096 / 0.05)
    assert summary["mfu"] == pytest.approx(3e6 * 4096 / 0.05 / 1e12)
    assert mfu(5e11, None) is None and mfu(5e11, 1e12) == 0.5


def test_known_peaks_are_bf16_tensor_core_peaks():
    assert device_peak("NVIDIA H200", bf16=True) == 989e12
    assert device_peak("NVIDIA A100-SXM4-80GB", bf16=True) == 312e12
    assert device_peak("NVIDIA H100 80GB HBM3", bf16=False) is None  # fp32's peak depends on TF32
    assert device_peak("a laptop", bf16=True) is None


def test_architectures_cost_the_same_flops_and_differ_in_towers():
    model = resolve_model_config("chameleon-443m-mot")
    names = ["text", "image", "speech"]
    dense, mot, moe = (architecture_config(model, a, names) for a in ("dense", "mot", "moe4x"))
    assert set(dense.towers.values()) == {"shared"} and mot.towers == {} and moe.moe.towers == ["shared"]
    assert flops_per_token(dense, 4096).training == flops_per_token(mot, 4096).training


def test_batches_interleave_the_modalities_about_evenly():
    ids = interleaved_modalities(2, 4096, 3, random.Random(0))
    counts = torch.bincount(ids.flatten(), minlength=3).tolist()
    assert ids.shape == (2, 4096) and min(counts) > 0.2 * sum(counts)


def test_the_cli_times_every_architecture(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", "chameleon-37m-mot", *TINY, "--seq", "96", "--batch", "1", "--rounds", "2",
                 "--warmup", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| mot |" in printed and "| moe4x |" in printed and "vs dense" in printed
    report = json.loads(out.read_text())
    rows = {r["architecture"]: r for r in report["results"]}
    assert rows["dense"]["step_vs_dense"] == 1.0 and len(rows["mot"]["step_ms"]) == 2
    assert rows["mot"]["flops_per_token"] == rows["dense"]["flops_per_token"]
    assert rows["mot"]["parameters"] > rows["dense"]["parameters"] and report["modalities"] == ["text", "image"]


@pytest.mark.parametrize("changes, message", [(dict(seq=9999), "seq=9999: longer than the model's max_seq_len"),
                                              (dict(architectures=["sparse"]), "choose from"),
                                              (dict(modalities=4), "modalities=4"),
                                              (dict(profile_dir=__file__), "exists and is not a directory")])
def test_bad_settings_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        BenchSettings(resolve_model_config("chameleon-37m-mot", TINY), **changes)


def test_profile_writes_each_architectures_operators(tmp_path, capsys):
    assert main(["bench", "--config", "chameleon-37m-mot", *TINY, "--seq", "96", "--batch", "1", "--rounds", "1",
                 "--warmup", "0", "--architectures", "dense,mot", "--profile", str(tmp_path / "prof")]) == 0
    assert "profiled one step of mot" in capsys.readouterr().out
    events = {}
    for name in ("dense", "mot"):
        table = (tmp_path / "prof" / f"{name}.txt").read_text()
        assert table.startswith(f"one training step of {name} on cpu") and "aten::mm" in table
        trace = json.loads((tmp_path / "prof" / f"{name}.trace.json").read_text())
        events[name] = Counter(event.get("name") for event in trace["traceEvents"])
    # MoT's step moves rows between its towers' parts and sequence order by gathers; the dense model
    # has one part and gathers only in its embedding lookup (the trace holds every operator, the
    # table only the slowest)
    assert events["mot"]["aten::index_select"] > events["dense"]["aten::index_select"] + 4
