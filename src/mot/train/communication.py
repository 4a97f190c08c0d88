"""A model of FSDP2 training beyond one machine: the bytes each rank moves per optimizer step and
the step time they predict for dense, MoT and MoE-4x (the paper's section 6.1).

MoT keeps a dense model's FLOPs per token but multiplies its non-embedding parameters; FSDP2
(full shard, as the trainer applies it: each block, then the root) moves every parameter each
step, so MoT's step pays for its parameters in communication, not compute:

- forward: each block's parameters are all-gathered, then freed (``reshard_after_forward``);
- backward: each block's parameters are all-gathered again and its gradients reduce-scattered;
  the root (embeddings, final norm, head) is gathered once, since it stays gathered for the
  backward that follows;
- a ring all-gather or reduce-scatter over ``N`` ranks sends and receives ``(N - 1) / N`` of the
  whole tensor at every rank.

So a rank moves ``(N-1)/N * (p_bytes * (2 * P_blocks + P_root) + g_bytes * P)`` bytes per step,
in ``3 L + 2`` collectives (``L`` blocks and the root). Its step time is compute (training FLOPs
per token x tokens per rank over achieved FLOP/s) plus the communication that compute cannot
hide: ``compute + max(0, comm - overlap * compute)``, with ``comm = bytes / bandwidth +
collectives x latency``. Bandwidth is the slowest link of the ring: NVLink within a node;
across nodes, each rank's share of its node's network. Every number is an assumption the user
can change (:class:`Cluster`); :func:`predict` says which ones it used.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence

from ..config import ConfigError, ModelConfig, check_number
from ..model.accounting import block_parameters, count_parameters, flops_per_token


@dataclass
class Cluster:
    """A training cluster's assumptions. Defaults: the paper's AWS p4de.24xlarge (8 x A100 80GB
    per node, NVLink 300 GB/s per direction, 4 x 100 Gb/s EFA per node), 40% of the A100's bf16
    peak achieved in compute, 50 µs per collective, half of the communication hidden behind
    compute, and mot's FSDP2 without a mixed-precision policy (fp32 parameters and gradients: 4 bytes each)."""

    gpus_per_node: int = 8
    peak_tflops: float = 312.0
    compute_efficiency: float = 0.4
    #: GB/s each rank sends (and receives) inside a node, and across nodes per node
    intra_node_gbytes: float = 300.0
    inter_node_gbytes: float = 50.0
    #: the fixed cost of one collective, microseconds
    latency_us: float = 50.0
    #: share of the compute time communication can hide behind (0: none, 1: all of it)
    overlap: float = 0.5
    param_bytes: int = 4
    grad_bytes: int = 4

    def __post_init__(self) -> None:
        for name in ("gpus_per_node", "param_bytes", "grad_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}: must be an integer >= 1")
        for name in ("peak_tflops", "intra_node_gbytes", "inter_node_gbytes"):
            check_number(name, getattr(self, name), "must be > 0", lambda v: v > 0)
        check_number("compute_efficiency", self.compute_efficiency, "must be in (0, 1]", lambda v: 0 < v <= 1)
        check_number("latency_us", self.latency_us, "must be >= 0", lambda v: v >= 0)
        check_number("overlap", self.overlap, "must be in [0, 1]", lambda v: 0 <= v <= 1)

    def bandwidth(self, ranks: int) -> float:
        """Bytes/s a rank's ring traffic gets: NVLink within one node, else its share of the node's network."""
        if ranks <= self.gpus_per_node:
            return self.intra_node_gbytes * 1e9
        return self.inter_node_gbytes * 1e9 / self.gpus_per_node


@dataclass
class Sharding:
    """Parameters of a model as FSDP2 groups them: in blocks (gathered twice per step) and in the root."""

    blocks: int
    root: int

    @property
    def total(self) -> int:
        return self.blocks + self.root


def sharding(config: ModelConfig) -> Sharding:
    """The block and root parameters of a model config (the root: embeddings, final norm, head)."""
    blocks = block_parameters(config)
    return Sharding(blocks=blocks, root=count_parameters(config).total - blocks)


def bytes_per_step(parts: Sharding, ranks: int, param_bytes: int = 4, grad_bytes: int = 4) -> float:
    """Bytes one rank sends per optimizer step under FSDP2 full shard over ``ranks`` (0 alone)."""
    if ranks < 1:
        raise ValueError(f"ranks={ranks}: expected at least 1")
    share = (ranks - 1) / ranks
    return share * (param_bytes * (2 * parts.blocks + parts.root) + grad_bytes * parts.total)


def collectives_per_step(config: ModelConfig) -> int:
    """All-gathers and reduce-scatters per step: every block's two gathers and one reduce-scatter,
    the root's gather and reduce-scatter."""
    return 3 * config.n_layers + 2


@dataclass
class Prediction:
    """One architecture's predicted step at one rank count."""

    ranks: int
    parameters: int
    bytes_per_rank: float
    compute_seconds: float
    communication_seconds: float
    step_seconds: float
    #: tokens per GPU per step from which compute hides all of the communication
    #: (``comm <= overlap x compute``); ``None`` when nothing overlaps
    tokens_to_hide: Optional[float]

    @property
    def exposed_seconds(self) -> float:
        return self.step_seconds - self.compute_seconds


def predict(config: ModelConfig, seq_len: int, tokens_per_rank: int, ranks: int, cluster: Cluster) -> Prediction:
    """The step time of ``config`` on ``ranks`` GPUs with ``tokens_per_rank`` tokens each."""
    parts = sharding(config)
    seconds_per_token = (flops_per_token(config, seq_len).training
                         / (cluster.peak_tflops * 1e12 * cluster.compute_efficiency))
    compute = seconds_per_token * tokens_per_rank
    moved = bytes_per_step(parts, ranks, cluster.param_bytes, cluster.grad_bytes)
    communication = 0.0 if ranks == 1 else (moved / cluster.bandwidth(ranks)
                                            + collectives_per_step(config) * cluster.latency_us * 1e-6)
    step = compute + max(0.0, communication - cluster.overlap * compute)
    hide = None if cluster.overlap == 0 else communication / (cluster.overlap * seconds_per_token)
    return Prediction(ranks, parts.total, moved, compute, communication, step, hide)


def predict_series(configs: Dict[str, ModelConfig], seq_len: int, tokens_per_rank: int,
                   ranks: Sequence[int], cluster: Cluster) -> Dict[str, List[Prediction]]:
    """:func:`predict` for every architecture at every rank count."""
    return {label: [predict(config, seq_len, tokens_per_rank, n, cluster) for n in ranks]
            for label, config in configs.items()}


def markdown(title: str, predictions: Dict[str, List[Prediction]], reference: str, cluster: Cluster,
             seq_len: int, tokens_per_rank: int) -> List[str]:
    """A table of predicted step times (and their ratio to the reference's) against GPU count, and
    the tokens per GPU each architecture needs for its communication to hide at the most GPUs."""
    ranks = [p.ranks for p in predictions[reference]]
    lines = [f"### {title}", "",
             f"Sequence {seq_len:,}, {tokens_per_rank:,} tokens per GPU per step; "
             + ", ".join(f"{k}={v}" for k, v in asdict(cluster).items()) + ".", "",
             f"| architecture | parameters | GB each GPU sends per step (at {ranks[-1]} GPUs) | "
             + " | ".join(f"{n} GPU{'s' if n > 1 else ''}" for n in ranks)
             + f" | tokens/GPU to hide it (at {ranks[-1]} GPUs) |", "|---|---:|---:|" + "---:|" * (len(ranks) + 1)]
    for label, row in predictions.items():
        cells = []
        for prediction, base in zip(row, predictions[reference]):
            ratio = "" if label == reference else f" ({prediction.step_seconds / base.step_seconds:.2f}x)"
            cells.append(f"{1000 * prediction.step_seconds:,.0f} ms{ratio}")
        hide = row[-1].tokens_to_hide
        lines.append(f"| {label} | {row[0].parameters / 1e6:,.0f}M | {row[-1].bytes_per_rank / 1e9:.2f} | "
                     + " | ".join(cells) + f" | {'never' if hide is None else f'{hide:,.0f}'} |")
    return lines


# ------------------------------------------------------ what FSDP2 actually sends, measured --

#: the collectives FSDP2 calls (named differently across torch versions), all ``(output, input, ...)``;
#: the whole tensor is an all-gather's output and a reduce-scatter's input
GATHERS = ("all_gather_single", "all_gather_into_tensor")
SCATTERS = ("reduce_scatter_single", "reduce_scatter_tensor")


class SentBytes:
    """Bytes this rank sent through all-gathers and reduce-scatters while counting."""

    def __init__(self) -> None:
        self.bytes = 0.0
        self.collectives = 0


@contextmanager
def counting_sent_bytes() -> Iterator[SentBytes]:
    """While inside, every all-gather and reduce-scatter of ``torch.distributed`` adds the bytes this
    rank sends in a ring, ``(N - 1) / N`` of the whole tensor, to the yielded counter (once per call,
    should one collective call another). Needs an initialised process group."""
    import torch.distributed as dist

    world = dist.get_world_size()
    counter, inside, originals = SentBytes(), [False], {}
    for name in GATHERS + SCATTERS:
        original = getattr(dist, name, None)
        if original is None:
            continue

        def counting(*args, _original=original, _gather=name in GATHERS, **kwargs):
            if inside[0]:
                return _original(*args, **kwargs)
            whole = (kwargs.get("output_tensor", args[0] if args else None) if _gather
                     else kwargs.get("input", args[1] if len(args) > 1 else None))
            counter.bytes += whole.numel() * whole.element_size() * (world - 1) / world
            counter.collectives += 1
            inside[0] = True
            try:
                return _original(*args, **kwargs)
            finally:
                inside[0] = False

        originals[name] = original
        setattr(dist, name, counting)
    try:
        yield counter
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)
