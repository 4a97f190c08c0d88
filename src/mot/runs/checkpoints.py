"""Training checkpoints with ``torch.distributed.checkpoint`` (DCP): written whole or not at all.

A save writes into ``step-NNNNNNNN.tmp/``: DCP's files (each rank its shards, replicated tensors
once), one ``rank-NNNNN.pt`` per rank for what differs between ranks (data position, RNG), then
``complete.json`` with the step, the world size and the size and SHA-256 of every file; only then
is the directory renamed to ``step-NNNNNNNN/``. A crash leaves the earlier checkpoints untouched
and at most a ``.tmp`` directory, which :meth:`CheckpointManager.latest` skips; a file damaged
later fails its hash, and ``latest`` falls back to the checkpoint before. The run's writer asks
``latest`` to move each damaged checkpoint into ``damaged/`` as well, so that no later save of the
same step replaces it and no prune deletes it: what a run had is never lost, even when damaged.

Every rank calls every method (SPMD) with the same ``app_state`` keys. The directory must be on a
file system all ranks share: rank 0 alone hashes, writes the marker, renames and prunes.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_state_dict, set_model_state_dict,
                                                     set_state_dict)

from ..io import CheckpointError, file_entry, file_problem
from .dcp_reader import SafeFileSystemReader, SafeLoadPlanner, UnsafeCheckpointError, weights_only_reason

MARKER = "complete.json"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_TMP_DIR = re.compile(r"^step-(\d{8})\.tmp$")
#: where damaged checkpoints are moved; its name matches neither pattern above, so nothing
#: in it is ever loaded, replaced or pruned
DAMAGED_DIR = "damaged"
#: DCP warns on every save and load without a process group; a single process is intended here.
_SINGLE_PROCESS_WARNING = "torch.distributed is disabled, unavailable or uninitialized"

T = TypeVar("T")


def model_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    """``{"model": ..., "optimizer": ...}`` state dicts keyed by parameter name, for ``app_state``.

    With FSDP2 the tensors are this rank's DTensor shards; for a plain model they share storage
    with the parameters, so loading into them writes the parameters in place.
    """
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def load_model_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                               state: Dict[str, Any]) -> None:
    """Put the state dicts of :func:`model_optimizer_state` (after a load) into the model and optimizer."""
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _world_size() -> int:
    return dist.get_world_size() if _distributed() else 1


def _on_rank0(work: Callable[[], T]) -> T:
    """Run ``work`` on rank 0 only and give its result, or its failure, to every rank.

    The broadcast doubles as a barrier: no rank goes on before rank 0 is done.
    """
    if not _distributed():
        return work()
    payload: List[Any] = [None]
    failure: Optional[BaseException] = None
    if dist.get_rank() == 0:
        try:
            payload = [(True, work())]
        except Exception as error:  # handed to the other ranks so that they raise too, not hang
            failure = error
            payload = [(False, f"{type(error).__name__}: {error}")]
    dist.broadcast_object_list(payload, src=0)
    ok, value = payload[0]
    if failure is not None:
        raise failure
    if not ok:
        raise CheckpointError(f"rank 0 failed: {value}")
    return value


@contextmanager
def _single_process_quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SINGLE_PROCESS_WARNING)
        yield


class _ArchitectureMismatch(Exception):
    """Raised inside DCP's planning step, before anything is read."""


class _StrictLoadPlanner(SafeLoadPlanner):
    """DCP's planner, but every key must match both ways and every tensor's shape must agree.

    DCP alone loads a checkpoint that holds *more* than asked for (a deeper model into a
    shallower one) and stops at the first missing key; this names all kinds of mismatch. With a
    ``part`` (``"model"``) only the saved keys of that part are compared: the rest (the
    optimizer) is not read.
    """

    def __init__(self, part: Optional[str] = None):
        super().__init__()
        self.part = part

    def create_local_plan(self):
        saved = self.metadata.state_dict_metadata
        if self.part is not None:
            saved = {key: entry for key, entry in saved.items() if key.startswith(f"{self.part}.")}
        missing = [key for key in self.state_dict if key not in saved]
        unexpected = [key for key in saved if key not in self.state_dict]
        wrong = []
        for key, value in self.state_dict.items():
            entry = saved.get(key)
            if entry is None:
                continue
            if isinstance(value, torch.Tensor) != isinstance(entry, TensorStorageMetadata):
                wrong.append(f"{key} (a tensor on one side only)")
            elif isinstance(value, torch.Tensor) and tuple(value.shape) != tuple(entry.size):
                wrong.append(f"{key} saved {list(entry.size)}, expected {list(value.shape)}")
        problems = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                    for label, keys in (("wrong shape or type", wrong), ("missing from the checkpoint", missing),
                                        ("not in this run's state", unexpected)) if keys]
        if problems:
            raise _ArchitectureMismatch("; ".join(problems))
        return super().create_local_plan()


def _first_cause(error: CheckpointException) -> BaseException:
    """The exception of the lowest failing rank (DCP gathers one per rank)."""
    return error.failures[min(error.failures)][0]


def _fsync_directory(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _verify(path: Path, step: int) -> Optional[str]:
    """Why the checkpoint at ``path`` must not be loaded, or ``None`` when every file checks out."""
    marker = path / MARKER
    if not marker.is_file():
        return f"no {MARKER} (the save did not finish)"
    try:
        info = json.loads(marker.read_text())
        files = {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in info["files"].items()}
        header = (info["format"], info["step"], info["world_size"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{marker} is unreadable ({type(error).__name__}: {error})"
    if header[0] != FORMAT_VERSION:
        return f"{marker} has format {header[0]!r}; this version of mot reads format {FORMAT_VERSION}"
    if header[1] != step or not isinstance(header[2], int):
        return f"{marker} is for step {header[1]!r} and world size {header[2]!r}"
    for name, (size, digest) in sorted(files.items()):
        problem = file_problem(path / name, size, digest, MARKER)
        if problem is not None:
            return problem
    return None


class CheckpointManager:
    """Saves, finds and loads the training checkpoints of one run directory."""

    def __init__(self, directory: str | Path, keep_last: int = 3, keep_every: int = 0):
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last={keep_last!r}: must be an integer >= 1")
        if isinstance(keep_every, bool) or not isinstance(keep_every, int) or keep_every < 0:
            raise ValueError(f"keep_every={keep_every!r}: must be an integer >= 0")
        self.directory = Path(directory)
        self.keep_last = keep_last
        #: checkpoints of steps that are multiples of it are never pruned (0: none are kept)
        self.keep_every = keep_every
        #: checkpoints whose hashes :meth:`latest` has checked: :meth:`load` does not hash them again
        self._verified: set = set()

    def path_for(self, step: int) -> Path:
        """The directory of the complete checkpoint of ``step``."""
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 10 ** 8:
            raise ValueError(f"step={step!r}: must be an integer in [0, 10**8)")
        return self.directory / f"step-{step:08d}"

    def save(self, step: int, app_state: Dict[str, Any], per_rank: Optional[Dict[str, Any]] = None) -> Path:
        """Write ``app_state`` (tensors, state dicts, plain values; the same keys on every rank)
        with DCP and ``per_rank`` (this rank's own values: tensors, numbers, strings, lists and
        dicts of them, read back with ``weights_only=True``), then commit; return the directory.

        A checkpoint of the same step is replaced; complete checkpoints beyond ``keep_last``
        (except those of multiples of ``keep_every``), and unfinished ``.tmp`` directories of
        earlier steps, are deleted.
        """
        final = self.path_for(step)
        staging = final.with_name(final.name + ".tmp")

        def prepare() -> None:
            if staging.exists():  # left by an interrupted save of this step
                shutil.rmtree(staging)
            staging.mkdir(parents=True)

        _on_rank0(prepare)
        try:
            with _single_process_quiet():
                dcp.save(app_state, storage_writer=dcp.FileSystemWriter(staging))
        except CheckpointException as error:  # a BaseException: turn it into one callers can catch
            cause = _first_cause(error)
            raise CheckpointError(f"{staging}: saving failed: {type(cause).__name__}: {cause}") from None
        if per_rank is not None:
            torch.save(per_rank, staging / f"rank-{_rank():05d}.pt")
        world_size = _world_size()
        if _distributed():
            dist.barrier()  # every rank's files are written before rank 0 hashes them

        def commit() -> Path:
            files = {str(f.relative_to(staging)): file_entry(f) for f in sorted(staging.rglob("*")) if f.is_file()}
            info = {"format": FORMAT_VERSION, "step": step, "world_size": world_size, "files": files}
            with open(staging / MARKER, "w") as handle:
                json.dump(info, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            _fsync_directory(self.directory)
            self._prune(step)
            return final

        return _on_rank0(commit)

    def _prune(self, saved_step: int) -> None:
        # only this directory's own entries: checkpoints moved into damaged/ are kept for good
        complete, unfinished = [], []
        for entry in self.directory.iterdir():
            if (match := _STEP_DIR.match(entry.name)) and (entry / MARKER).is_file():
                complete.append((int(match.group(1)), entry))
            elif (match := _TMP_DIR.match(entry.name)) and int(match.group(1)) < saved_step:
                unfinished.append(entry)
        complete.sort()
        for step, entry in complete[:-self.keep_last]:
            if not (self.keep_every and step % self.keep_every == 0):
                shutil.rmtree(entry)
        for entry in unfinished:
            shutil.rmtree(entry)

    def steps(self) -> List[int]:
        """The steps of the saved checkpoints, oldest first (whether each checks out is for
        :meth:`verified` to say)."""
        if not self.directory.is_dir():
            return []
        return sorted(int(match.group(1)) for entry in self.directory.iterdir()
                      if (match := _STEP_DIR.match(entry.name)) and entry.is_dir())

    def verified(self, step: int) -> Path:
        """The checkpoint of ``step`` after checking every file against its hash; a
        :class:`CheckpointError` says why it cannot be read (missing, unfinished or damaged)."""
        path = self.path_for(step)
        if not path.is_dir():
            saved = self.steps()
            raise CheckpointError(f"{self.directory} has no checkpoint of step {step}; it has steps {saved}")
        problem = _verify(path, step)
        if problem is not None:
            raise CheckpointError(f"{path}: {problem}")
        self._verified.add(path)
        return path

    def latest(self, set_aside_damaged: bool = False) -> Tuple[Optional[Path], List[str]]:
        """The newest complete checkpoint whose every file matches its hash (``None`` if there is
        none), and a line for each checkpoint directory passed over and why.

        Readers of a run leave everything where it is. The run's writer passes
        ``set_aside_damaged=True``: each damaged checkpoint newer than the one returned is then
        moved into ``damaged/`` (listed by :meth:`damaged`), and its line names both paths."""
        path, problems = _on_rank0(lambda: self._find_latest(set_aside_damaged))
        if path is not None:
            self._verified.add(path)
        return path, problems

    def damaged(self) -> List[Path]:
        """The damaged checkpoints that ``latest(set_aside_damaged=True)`` has moved aside, now or
        in an earlier start of the run, sorted by name."""
        aside = self.directory / DAMAGED_DIR
        return _on_rank0(lambda: sorted(aside.iterdir()) if aside.is_dir() else [])

    def _move_aside(self, entry: Path) -> Path:
        aside = self.directory / DAMAGED_DIR
        aside.mkdir(exist_ok=True)
        target, copy = aside / entry.name, 1
        while target.exists():  # a damaged copy of the same step, set aside before, stays too
            copy += 1
            target = aside / f"{entry.name}-{copy}"
        os.rename(entry, target)
        _fsync_directory(aside)
        _fsync_directory(self.directory)
        return target

    def _find_latest(self, set_aside_damaged: bool = False) -> Tuple[Optional[Path], List[str]]:
        if not self.directory.is_dir():
            return None, []
        problems, candidates = [], []
        for entry in sorted(self.directory.iterdir()):
            if _TMP_DIR.match(entry.name):
                problems.append(f"{entry}: unfinished save (interrupted or in progress), ignored")
            elif (match := _STEP_DIR.match(entry.name)) and entry.is_dir():
                candidates.append((int(match.group(1)), entry))
        for step, entry in sorted(candidates, reverse=True):
            problem = _verify(entry, step)
            if problem is None:
                return entry, problems
            if set_aside_damaged:
                problems.append(f"{entry}: {problem}; skipped, and moved aside to {self._move_aside(entry)}")
            else:
                problems.append(f"{entry}: {problem}; skipped")
        return None, problems

    def load(self, path: str | Path, app_state: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Load the checkpoint at ``path`` into ``app_state`` in place (tensors are copied into,
        plain values replaced) and return this rank's ``per_rank`` dict (``None`` if none was saved).

        Raises :class:`CheckpointError` before changing anything when the checkpoint fails
        verification, was written by another number of ranks, or holds other keys or shapes
        than ``app_state`` (another architecture or optimizer). The hashes are checked on rank 0,
        except for a checkpoint that :meth:`latest` of this manager has just checked.
        """
        path = Path(path)
        info = _on_rank0(lambda: self._read_verified(path))
        if info["world_size"] != _world_size():
            raise CheckpointError(f"{path / MARKER}: saved by {info['world_size']} ranks, this run has "
                                  f"{_world_size()}; per-rank state (data position, RNG) cannot be split")
        self._load_dcp(path, app_state, _StrictLoadPlanner(), "this run's model and optimizer")
        rank_file = f"rank-{_rank():05d}.pt"
        if rank_file not in info["files"]:
            return None
        try:  # weights_only: the file may have been planted, and may name a function to call
            return torch.load(path / rank_file, weights_only=True)
        except pickle.UnpicklingError as error:
            raise UnsafeCheckpointError(f"{path / rank_file}: refused to load it: "
                                        f"{weights_only_reason(error)}") from None

    def load_model(self, path: str | Path, model: torch.nn.Module) -> None:
        """Load only the model of the checkpoint at ``path`` into ``model`` (a plain, unsharded
        module): no optimizer is built and the optimizer's state is not read. Any number of ranks
        may have saved it. Verification and the strict key check are :meth:`load`'s."""
        path = Path(path)
        _on_rank0(lambda: self._read_verified(path))
        state = {"model": get_model_state_dict(model)}
        self._load_dcp(path, state, _StrictLoadPlanner(part="model"), "this model")
        set_model_state_dict(model, state["model"])

    @staticmethod
    def _load_dcp(path: Path, app_state: Dict[str, Any], planner: "_StrictLoadPlanner", what: str) -> None:
        try:
            with _single_process_quiet():
                dcp.load(app_state, storage_reader=SafeFileSystemReader(path), planner=planner)
        except CheckpointException as error:
            cause = _first_cause(error)
            if isinstance(cause, _ArchitectureMismatch):
                raise CheckpointError(f"{path} does not fit {what}: {cause}") from None
            raise CheckpointError(f"{path}: loading failed: {type(cause).__name__}: {cause}") from None

    def _read_verified(self, path: Path) -> Dict[str, Any]:
        match = _STEP_DIR.match(path.name)
        if match is None:
            raise CheckpointError(f"{path} is not a complete checkpoint directory (step-NNNNNNNN)")
        if path not in self._verified:
            problem = _verify(path, int(match.group(1)))
            if problem is not None:
                raise CheckpointError(f"{path}: {problem}")
        return json.loads((path / MARKER).read_text())
