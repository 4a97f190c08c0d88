"""Reading YAML that mot did not write itself, with bounds on what it may cost.

``yaml.safe_load`` builds no arbitrary objects, but it still lets a few hundred bytes stand for
billions of values: an alias (``*name``) refers to an anchored node again rather than copying
it, so anchors that alias each other nine deep, nine times each ("billion laughs") load in a
moment and then keep whatever walks the result (OmegaConf, printing) busy for hours.
:func:`read_yaml` bounds the file's size, its nesting and the size of the result with every
alias counted again, and refuses the file with :class:`YamlError` before anything walks it.

Part of the lowest layer: it imports the standard library, ``yaml`` and :mod:`mot.errors` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Set, Tuple

import yaml

from ..errors import MotError

#: bytes a YAML file may hold (configs and recipes are a few KiB)
MAX_YAML_BYTES = 1 << 20
#: how deep mappings and lists may nest, in the file and in the result with aliases followed
MAX_YAML_DEPTH = 64
#: values the result may hold with every alias counted again (a config has a few hundred); a
#: string counts once more for every full KiB, so that aliases of a long string count as copies
MAX_YAML_NODES = 100_000


class YamlError(MotError, ValueError):
    """A YAML file that is unreadable, invalid, or beyond one of the limits above; the message
    names the file and the limit, or the YAML problem and its line."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with two bounds on its own work. It refuses nesting deeper than
    :data:`MAX_YAML_DEPTH` while it composes (composing recurses once per level, so a deep file
    would otherwise end in a ``RecursionError``), and more than :data:`MAX_YAML_NODES` mapping
    entries with merge keys (``<<: [*a, *a]``) followed: merging copies the entries of the
    merged mappings, so merge keys that merge each other grow like aliases, while loading."""

    def __init__(self, text: str, path: Path):
        super().__init__(text)
        self.name = str(path)  # YAML's errors name the file rather than "<unicode string>"
        self._path = path
        self._depth = 0
        self._entries = 0

    def flatten_mapping(self, node):
        super().flatten_mapping(node)  # which calls this again for each mapping it merges
        self._entries += len(node.value)
        if self._entries > MAX_YAML_NODES:
            raise YamlError(f"{self._path} holds more than {MAX_YAML_NODES} mapping entries with its merge keys "
                            f"(<<) followed, the most a YAML file read by mot may hold")

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlError(f"{self._path}: nested deeper than {MAX_YAML_DEPTH} levels "
                                f"(line {self.peek_event().start_mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_yaml(path: str | Path) -> Any:
    """The value the YAML file at ``path`` holds (``None`` for an empty file), read as
    ``yaml.safe_load`` reads it, within :data:`MAX_YAML_BYTES`, :data:`MAX_YAML_DEPTH` and
    :data:`MAX_YAML_NODES`. Raises :class:`YamlError` naming the file for a file that cannot be
    read, is not UTF-8, is not valid YAML, uses a tag outside plain YAML (``!!python/object``),
    or passes a limit."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)  # no more than that, whatever the file holds
    except OSError as error:
        raise YamlError(f"{path} cannot be read: {error.strerror or error}") from None
    if len(data) > MAX_YAML_BYTES:
        raise YamlError(f"{path} is larger than {MAX_YAML_BYTES} bytes, the most a YAML file read by mot may hold")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise YamlError(f"{path} is not UTF-8 text: {error.reason} at byte {error.start}") from None
    loader = _BoundedLoader(text, path)
    try:
        value = loader.get_single_data()
    except YamlError:
        raise
    except yaml.YAMLError as error:
        raise YamlError(f"{path} is not valid YAML: {error}") from None
    except ValueError as error:  # a value Python refuses to build, e.g. an integer of 5,000 digits
        raise YamlError(f"{path}: {error}") from None
    finally:
        loader.dispose()
    nodes, _ = _measure(value, 0, {}, set(), path)
    if nodes > MAX_YAML_NODES:
        raise YamlError(f"{path} holds more than {MAX_YAML_NODES} values with its aliases followed, the most "
                        f"a YAML file read by mot may hold (anchors whose aliases expand each other?)")
    return value


def _measure(value: Any, depth: int, seen: Dict[int, Tuple[int, int]], open_ids: Set[int],
             path: Path) -> Tuple[int, int]:
    """``(values, levels)`` of ``value``, found ``depth`` containers deep, with every alias counted
    again. A node that several aliases share is one object in the result: it is measured once
    (``seen``, by ``id``) and then counted as often as it occurs, so measuring takes the time of
    the file, not of the expansion. A scalar is one level, as it is one to the composer."""
    key = id(value)
    if key in seen:
        nodes, levels = seen[key]
        if depth + levels > MAX_YAML_DEPTH:
            raise YamlError(f"{path} nests deeper than {MAX_YAML_DEPTH} levels with its aliases followed")
        return nodes, levels
    if depth >= MAX_YAML_DEPTH:
        raise YamlError(f"{path} nests deeper than {MAX_YAML_DEPTH} levels with its aliases followed")
    if isinstance(value, (str, bytes)):
        return 1 + len(value) // 1024, 1
    if not isinstance(value, (dict, list, tuple, set)):
        return 1, 1
    if key in open_ids:
        raise YamlError(f"{path} holds a value that contains itself (an alias inside its own anchor)")
    open_ids.add(key)
    children = [item for pair in value.items() for item in pair] if isinstance(value, dict) else value
    nodes, levels = 1, 1
    for child in children:
        child_nodes, child_levels = _measure(child, depth + 1, seen, open_ids, path)
        nodes += child_nodes
        levels = max(levels, child_levels + 1)
        if nodes > MAX_YAML_NODES:  # no need to walk the rest: the file is refused
            break
    open_ids.discard(key)
    seen[key] = nodes, levels
    return nodes, levels
