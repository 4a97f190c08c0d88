"""The lowest layer: the files mot reads and writes, above :mod:`mot.errors` only.

``yaml_reader`` reads YAML within bounds; ``files`` hashes, checks and writes files atomically;
``weights`` is the release format of a model (``config.json`` + ``model.safetensors`` +
``checksums.json``)."""

from .files import atomic_write, file_entry, file_problem, sha256_file
from .weights import CheckpointError
from .yaml_reader import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, YamlError, read_yaml

__all__ = ["CheckpointError", "MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "YamlError", "atomic_write",
           "file_entry", "file_problem", "read_yaml", "sha256_file"]
