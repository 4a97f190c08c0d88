"""Reading DCP checkpoints without running code from them.

``torch.distributed.checkpoint``'s own reader unpickles two things without restriction: the
``.metadata`` file and each non-tensor value in the ``.distcp`` files (torch's weights-only
mode off). Either can name any function, which unpickling calls, so a planted file would run
code the moment a run is resumed, exported or sampled from. Here the
metadata is unpickled with an allowlist of the few classes it is made of, and the values with
``weights_only=True``; anything else is refused with :class:`UnsafeCheckpointError`.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

from ..io import CheckpointError

METADATA_FILE = ".metadata"

#: Every global that a ``.metadata`` written by ``dcp.save`` refers to, found by unpickling real
#: checkpoints (plain and FSDP2-sharded, torch 2.13) with a recording ``find_class``. A torch
#: release that moves one of its classes to another module needs that name added here. The
#: checkpoint's path is pickled as ``pathlib._local.PosixPath`` by Python 3.13.
_ALLOWED_CLASSES = frozenset({
    ("torch.distributed.checkpoint.metadata", "Metadata"),
    ("torch.distributed.checkpoint.metadata", "StorageMeta"),
    ("torch.distributed.checkpoint.metadata", "MetadataIndex"),
    ("torch.distributed.checkpoint.metadata", "TensorStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "BytesStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "ChunkStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "TensorProperties"),
    ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),  # looks a layout up by name, e.g. "torch.strided"
    ("torch", "Size"),
    ("pathlib", "PosixPath"),  # StorageMeta.checkpoint_id
    ("pathlib._local", "PosixPath"),
})
#: dtypes pickle as ``torch.<name>``: every one torch has (``torch.float32``, ``torch.bfloat16``, ...)
_ALLOWED_DTYPES = frozenset(("torch", name) for name, value in vars(torch).items()
                            if isinstance(value, torch.dtype))
ALLOWED_GLOBALS = _ALLOWED_CLASSES | _ALLOWED_DTYPES


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file asks to run code (or build an object) that a checkpoint never needs."""


class _MetadataUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` (the Python documentation's
    "Restricting Globals"): a payload fails when it names its function, before anything is called."""

    def __init__(self, file: BinaryIO, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafeCheckpointError(f"{self._path}: refused to load the global {module}.{name}: a DCP "
                                        f"checkpoint's metadata never needs it (planted or not written by mot)")
        return super().find_class(module, name)


def read_metadata_file(path: str | Path) -> Metadata:
    """The DCP ``Metadata`` pickled in the file ``path``, unpickled with only :data:`ALLOWED_GLOBALS`.

    Raises :class:`UnsafeCheckpointError` for any other global and :class:`CheckpointError` for
    a file that cannot be read or is not DCP metadata."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            metadata = _MetadataUnpickler(handle, path).load()
    except CheckpointError:
        raise
    except Exception as error:  # truncated or garbled: pickle raises many kinds
        raise CheckpointError(f"{path} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(metadata, Metadata):
        raise CheckpointError(f"{path} holds a {type(metadata).__name__}, not DCP metadata")
    return metadata


def _read_checked_metadata(directory: Path) -> Metadata:
    """The metadata of the checkpoint in ``directory``, every data file it names a plain file
    name in that directory: a planted ``../`` path would make the load read any file as data."""
    metadata = read_metadata_file(directory / METADATA_FILE)
    for storage in (metadata.storage_data or {}).values():
        name = getattr(storage, "relative_path", None)
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise UnsafeCheckpointError(f"{directory / METADATA_FILE}: names the data file {name!r}, which is "
                                        f"not a file of the checkpoint directory")
    return metadata


class SafeFileSystemReader(dcp.FileSystemReader):
    """``dcp.FileSystemReader`` whose metadata is read by :func:`read_metadata_file`.

    The metadata is read and checked when the reader is made, outside ``dcp.load``: inside it,
    DCP takes any error of ``read_metadata`` for a missing file, logs it with its traceback and
    goes looking for per-rank metadata files, which hides the refusal behind another error.
    """

    def __init__(self, path: str | Path):
        super().__init__(path)
        self._metadata = _read_checked_metadata(Path(path))

    def reset(self, checkpoint_id: str | Path | None = None) -> None:
        super().reset(checkpoint_id)
        if checkpoint_id:
            self._metadata = _read_checked_metadata(Path(checkpoint_id))

    def read_metadata(self) -> Metadata:
        """The checked metadata, stamped with this load's id as DCP's own reader does.

        There are no per-rank arguments: DCP passes them only to a reader that accepts them,
        and mot writes one global metadata file."""
        metadata = self._metadata
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(dcp.DefaultLoadPlanner):
    """``dcp.DefaultLoadPlanner`` that loads non-tensor values (numbers, strings, lists, dicts)
    with ``torch.load(weights_only=True)``, so that a value cannot name a function to call."""

    def load_bytes(self, read_item: ReadItem, value: BinaryIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as error:
            storage = self.metadata.storage_data.get(read_item.storage_index)
            where = getattr(storage, "relative_path", "a .distcp file")
            raise UnsafeCheckpointError(f"{where}: refused to load the value of {read_item.dest_index.fqn!r}: "
                                        f"{weights_only_reason(error)}") from None
        if self.flatten_state_dict:  # as DCP's planner: put the value back where the nested state had it
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def weights_only_reason(error: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only error that says what was refused (the rest is advice on
    how to load the file anyway, which is wrong here), or the whole message if it has no such line."""
    found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: Please use|\n|$)", str(error))
    return found.group(1) if found else str(error)
