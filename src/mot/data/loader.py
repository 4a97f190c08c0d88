"""The stateful loader: mixes datasets by ratio, shards documents across data-parallel ranks,
packs them into fixed ``[batch_rows, seq_len]`` batches, and resumes exactly.

Everything random is a pure function of ``(seed, ...)`` and a few counters, so the loader's
state is a handful of integers (``state_dict``), and a loader restored from it yields exactly the
batches an uninterrupted one would (docs/design.md invariant 6):

* **document order**: in epoch e, dataset d is read in the order of a permutation drawn from
  ``(seed, d, e)``; rank r of w takes every w-th document of it, so ranks never share a document
  within an epoch;
* **mixing**: the i-th document of rank r comes from the dataset drawn with the given weights from
  ``(seed, r, i)`` (the paper mixes speech with text+image data 1:6);
* **carry-over**: a document piece that does not fit in the last row of a batch opens the next
  batch; the state records which;
* **caption dropout** (Transfusion, :mod:`.caption_dropout`): whether the captions of document
  d of dataset k are dropped in epoch e is drawn from ``(seed, 7, k, e, d)``, so a document
  resumed from the carry-over sees the same stream, cut at the same places.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import MotError
from ..tokenizers.vocab import VocabLayout
from .caption_dropout import drop_captions
from .packing import DocumentStream, PackedBatch, piece_bounds, rows_to_batch
from .shards import ShardReader


class LoaderError(MotError, ValueError):
    """The loader's settings or a state to resume from are invalid."""


class Loader:
    """Iterate over packed batches drawn from ``datasets`` (``[(name, reader, weight), ...]``).

    ``bidirectional`` and ``continuous`` are as in :func:`~.packing.rows_to_batch`; with
    ``continuous`` every reader holding that modality must be a latent shard (Transfusion; text-only
    shards need none). ``caption_dropout`` is the probability of dropping the caption that
    precedes each ``continuous`` span (see :func:`~.caption_dropout.drop_captions`).
    """

    def __init__(self, datasets: Sequence[Tuple[str, ShardReader, float]], *, layout: VocabLayout,
                 seq_len: int, batch_rows: int, modality_tower_index: Sequence[int],
                 bidirectional: Sequence[str] = (), continuous: Optional[str] = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, caption_dropout: float = 0.0):
        if not datasets:
            raise LoaderError("no datasets given")
        if not 0 <= rank < world_size:
            raise LoaderError(f"rank={rank} is outside [0, world_size={world_size})")
        if batch_rows < 1 or seq_len < 2:
            raise LoaderError(f"batch_rows={batch_rows} and seq_len={seq_len} must be at least 1 and 2")
        if not 0.0 <= caption_dropout <= 1.0:  # NaN fails this too
            raise LoaderError(f"caption_dropout={caption_dropout!r} must be a probability in [0, 1]")
        if caption_dropout > 0 and continuous is None:
            raise LoaderError(f"caption_dropout={caption_dropout!r} needs continuous spans (the Transfusion "
                              f"setting): it drops the captions of continuous images")
        weights = np.array([w for _, _, w in datasets], dtype=np.float64)
        if (weights <= 0).any() or not np.isfinite(weights).all():
            raise LoaderError(f"dataset weights {weights.tolist()} must be positive numbers")
        for name, reader, _ in datasets:
            if len(reader) < world_size:
                raise LoaderError(f"dataset {name!r} has {len(reader)} documents, fewer than the "
                                  f"{world_size} ranks: some rank would get none")
            holds_continuous = reader.meta["tokens_per_modality"].get(continuous, 0) > 0
            if continuous is not None and reader.continuous != continuous and holds_continuous:
                raise LoaderError(f"dataset {name!r} has no {continuous} latents: the Transfusion setting "
                                  f"reads the latent shards that prepare writes with a VAE")
        self.names = [name for name, _, _ in datasets]
        self.readers = [reader for _, reader, _ in datasets]
        self.probabilities = weights / weights.sum()
        self.layout, self.seq_len, self.batch_rows = layout, seq_len, batch_rows
        self.modality_tower_index, self.bidirectional = list(modality_tower_index), list(bidirectional)
        self.continuous, self.caption_dropout = continuous, float(caption_dropout)
        # the latents' shape, for a batch that happens to hold no image (text-only rows)
        self.latent_shape = next((tuple(r.latents.shape[1:]) for r in self.readers
                                  if getattr(r, "latents", None) is not None and len(r.latents)), None)
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
            stream = self._stream(dataset, document)
            for start, stop in piece_bounds(stream, self.seq_len):
                if start < first:
                    continue
                if stop - start > self.seq_len - used:
                    if len(rows) == self.batch_rows:
                        self._pending = [dataset, document, start]
                        return rows_to_batch(rows, self.seq_len, self.layout, self.modality_tower_index,
                                             self.bidirectional, self.continuous, self.latent_shape)
                    rows.append([])
                    used = 0
                rows[-1].append((stream, start, stop))
                used += stop - start

    def _stream(self, dataset: int, document: int) -> DocumentStream:
        """Document ``document`` of ``dataset`` as it is packed: with its captions dropped, if so drawn."""
        stream = self.readers[dataset].stream(document)
        if self.caption_dropout == 0:
            return stream
        # The dataset's epoch is that of its last drawn document, which is this one: a pending
        # document is the last drawn of all, and nothing is drawn before it is packed.
        epoch = self._cursors[dataset][0]
        # 7 tags this use of the seed, apart from the mixing and document-order draws
        rng = np.random.default_rng([self.seed, 7, dataset, epoch, document])
        return drop_captions(stream, self.layout, self.continuous, self.caption_dropout, rng)

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
