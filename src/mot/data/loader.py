"""The stateful loader: mixes datasets by ratio, shards documents across data-parallel ranks,
packs them into fixed ``[batch_rows, seq_len]`` batches, and resumes exactly.

Everything random is a pure function of ``(seed, ...)`` and a few counters, so the loader's
state is a handful of integers (``state_dict``), and a loader restored from it yields exactly the
batches an uninterrupted one would (DESIGN.md invariant 6):

* **document order**: in epoch e, dataset d is read in the order of a permutation drawn from
  ``(seed, d, e)``; rank r of w takes every w-th document of it, so ranks never share a document
  within an epoch;
* **mixing**: the i-th document of rank r comes from the dataset drawn with the given weights from
  ``(seed, r, i)`` (the paper mixes speech with text+image data 1:6);
* **carry-over**: a document piece that does not fit in the last row of a batch opens the next
  batch; the state records which.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..tokenizers.vocab import VocabLayout
from .packing import PackedBatch, piece_bounds, rows_to_batch
from .shards import ShardReader


class LoaderError(ValueError):
    """The loader's settings or a state to resume from are invalid."""


class Loader:
    """Iterate over packed batches drawn from ``datasets`` (``[(name, reader, weight), ...]``).

    ``bidirectional`` and ``continuous`` are as in :func:`~.packing.rows_to_batch`; with
    ``continuous`` every reader must be a latent shard (Transfusion).
    """

    def __init__(self, datasets: Sequence[Tuple[str, ShardReader, float]], *, layout: VocabLayout,
                 seq_len: int, batch_rows: int, modality_tower_index: Sequence[int],
                 bidirectional: Sequence[str] = (), continuous: Optional[str] = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not datasets:
            raise LoaderError("no datasets given")
        if not 0 <= rank < world_size:
            raise LoaderError(f"rank={rank} is outside [0, world_size={world_size})")
        if batch_rows < 1 or seq_len < 2:
            raise LoaderError(f"batch_rows={batch_rows} and seq_len={seq_len} must be at least 1 and 2")
        weights = np.array([w for _, _, w in datasets], dtype=np.float64)
        if (weights <= 0).any() or not np.isfinite(weights).all():
            raise LoaderError(f"dataset weights {weights.tolist()} must be positive numbers")
        for name, reader, _ in datasets:
            if len(reader) < world_size:
                raise LoaderError(f"dataset {name!r} has {len(reader)} documents, fewer than the "
                                  f"{world_size} ranks: some rank would get none")
            if continuous is not None and getattr(reader, "continuous", None) != continuous:
                raise LoaderError(f"dataset {name!r} has no {continuous} latents: the Transfusion setting "
                                  f"reads the latent shards that prepare writes with a VAE")
        self.names = [name for name, _, _ in datasets]
        self.readers = [reader for _, reader, _ in datasets]
        self.probabilities = weights / weights.sum()
        self.layout, self.seq_len, self.batch_rows = layout, seq_len, batch_rows
        self.modality_tower_index, self.bidirectional = list(modality_tower_index), list(bidirectional)
        self.continuous = continuous
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._draws = 0
        self._cursors: List[List[int]] = [[0, 0] for _ in datasets]  # per dataset: epoch, position
        self._pending: Optional[List[int]] = None  # dataset, document, piece start
        self._order_cache: Dict[Tuple[int, int], np.ndarray] = {}

    # ------------------------------------------------------------------------ iteration --

    def __iter__(self) -> "Loader":
        return self

    def __next__(self) -> PackedBatch:
        rows: List[list] = [[]]
        used = 0
        while True:
            if self._pending is not None:
                dataset, document, first = self._pending
                self._pending = None
            else:
                (dataset, document), first = self._next_document(), 0
            stream = self.readers[dataset].stream(document)
            for start, stop in piece_bounds(stream, self.seq_len):
                if start < first:
                    continue
                if stop - start > self.seq_len - used:
                    if len(rows) == self.batch_rows:
                        self._pending = [dataset, document, start]
                        return rows_to_batch(rows, self.seq_len, self.layout, self.modality_tower_index,
                                             self.bidirectional, self.continuous)
                    rows.append([])
                    used = 0
                rows[-1].append((stream, start, stop))
                used += stop - start

    def _next_document(self) -> Tuple[int, int]:
        draw = np.random.default_rng([self.seed, self.rank, self._draws])
        self._draws += 1
        dataset = int(draw.choice(len(self.readers), p=self.probabilities))
        epoch, position = self._cursors[dataset]
        mine = self._epoch_order(dataset, epoch)[self.rank::self.world_size]
        if position >= len(mine):
            epoch, position = epoch + 1, 0
            mine = self._epoch_order(dataset, epoch)[self.rank::self.world_size]
        self._cursors[dataset] = [epoch, position + 1]
        return dataset, int(mine[position])

    def _epoch_order(self, dataset: int, epoch: int) -> np.ndarray:
        key = (dataset, epoch)
        if key not in self._order_cache:
            self._order_cache = {k: v for k, v in self._order_cache.items() if k[0] != dataset}
            rng = np.random.default_rng([self.seed, dataset, epoch])
            self._order_cache[key] = rng.permutation(len(self.readers[dataset]))
        return self._order_cache[key]

    # ------------------------------------------------------------------------ state --

    def epochs(self) -> Dict[str, int]:
        """How many times each dataset has been started over on this rank."""
        return {name: epoch for name, (epoch, _) in zip(self.names, self._cursors)}

    def state_dict(self) -> dict:
        """Plain integers (JSON-safe): resuming from them continues the exact batch sequence."""
        return {"seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "datasets": list(self.names), "draws": self._draws,
                "cursors": [list(c) for c in self._cursors],
                "pending": list(self._pending) if self._pending is not None else None}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "rank", "world_size"):
            if state.get(key) != getattr(self, key):
                raise LoaderError(f"loader state has {key}={state.get(key)!r} but this loader has "
                                  f"{key}={getattr(self, key)!r}")
        if state.get("datasets") != self.names:
            raise LoaderError(f"loader state is for datasets {state.get('datasets')}, this loader reads {self.names}")
        self._draws = int(state["draws"])
        self._cursors = [[int(e), int(p)] for e, p in state["cursors"]]
        self._pending = None if state["pending"] is None else [int(v) for v in state["pending"]]
