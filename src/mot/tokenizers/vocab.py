"""The unified vocabulary: one id space for every modality's tokens and the special tokens.

Layout (ids in order)::

    specials | first modality (text) | second modality (image) | third (speech) | ...

Special tokens: ``<pad>``, ``<bos>``, ``<eos>``, and for every modality after the first a begin
and an end marker (``<boi>``/``<eoi>`` for image, ``<bos_speech>``/``<eos_speech>`` for speech,
``<begin_NAME>``/``<end_NAME>`` for any other name).

**Which tower owns a special token.** A token's tower produces that token's output, which
predicts the *next* token. So a special token belongs to the modality of the tokens that follow
it: ``<boi>`` is processed by the image tower (its output predicts the first image token), an end
marker by the first (text) modality, which resumes after it, and ``<pad>``, ``<bos>``, ``<eos>``
by the first modality too. The rule is the same for every setting; ``modality_of`` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import MotError

BASE_SPECIALS = ("<pad>", "<bos>", "<eos>")
_MARKER_NAMES = {"image": ("<boi>", "<eoi>"), "speech": ("<bos_speech>", "<eos_speech>")}


def _markers(modality: str) -> Tuple[str, str]:
    return _MARKER_NAMES.get(modality, (f"<begin_{modality}>", f"<end_{modality}>"))


class VocabError(MotError, ValueError):
    """A token id, a modality or a layout is inconsistent; the message names it."""


@dataclass(frozen=True)
class VocabLayout:
    """``modality_sizes``: ordered modality -> number of ids its tokenizer produces.

    The first modality is the host modality (text): it owns ``<pad>``, ``<bos>``, ``<eos>`` and
    every end marker.
    """

    modality_sizes: Mapping[str, int]
    _specials: Tuple[str, ...] = field(init=False, repr=False)
    _starts: Dict[str, int] = field(init=False, repr=False)
    _table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.modality_sizes:
            raise VocabError("modality_sizes must name at least one modality")
        for modality, size in self.modality_sizes.items():
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                raise VocabError(f"modality_sizes[{modality!r}]={size!r}: must be a positive integer")
        object.__setattr__(self, "modality_sizes", dict(self.modality_sizes))
        specials = list(BASE_SPECIALS)
        for modality in self.modalities[1:]:
            specials.extend(_markers(modality))
        object.__setattr__(self, "_specials", tuple(specials))
        starts, start = {}, len(specials)
        for modality, size in self.modality_sizes.items():
            starts[modality] = start
            start += size
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_table", self._build_modality_table())

    # ---- the layout ----

    @property
    def modalities(self) -> List[str]:
        return list(self.modality_sizes)

    @property
    def specials(self) -> Tuple[str, ...]:
        return self._specials

    @property
    def vocab_size(self) -> int:
        return len(self._specials) + sum(self.modality_sizes.values())

    def special(self, name: str) -> int:
        """The id of a special token such as ``"<boi>"``."""
        if name not in self._specials:
            raise VocabError(f"unknown special token {name!r}; this layout has {list(self._specials)}")
        return self._specials.index(name)

    def markers(self, modality: str) -> Tuple[int, int]:
        """Begin and end marker ids of a non-host modality."""
        self._check_modality(modality)
        if modality == self.modalities[0]:
            raise VocabError(f"{modality!r} is the host modality; it has no begin/end markers")
        begin, end = _markers(modality)
        return self.special(begin), self.special(end)

    def id_range(self, modality: str) -> Tuple[int, int]:
        """``[start, stop)`` of a modality's ids."""
        self._check_modality(modality)
        start = self._starts[modality]
        return start, start + self.modality_sizes[modality]

    # ---- conversions ----

    def to_global(self, modality: str, local_ids: np.ndarray) -> np.ndarray:
        """A tokenizer's ids ``[0, size)`` -> unified ids; out-of-range ids are an error."""
        local_ids = np.asarray(local_ids, dtype=np.int64)
        size = self.modality_sizes[self._check_modality(modality)]
        bad = (local_ids < 0) | (local_ids >= size)
        if bad.any():
            position = int(np.flatnonzero(bad.reshape(-1))[0])
            raise VocabError(f"{modality} token id {int(local_ids.reshape(-1)[position])} at position "
                             f"{position} is outside its tokenizer's range [0, {size})")
        return local_ids + self._starts[modality]

    def to_local(self, modality: str, global_ids: np.ndarray) -> np.ndarray:
        """Unified ids of one modality -> its tokenizer's ids."""
        start, stop = self.id_range(modality)
        global_ids = np.asarray(global_ids, dtype=np.int64)
        bad = (global_ids < start) | (global_ids >= stop)
        if bad.any():
            raise VocabError(f"id {int(global_ids[bad][0])} is not a {modality} token (range [{start}, {stop}))")
        return global_ids - start

    def modality_table(self) -> np.ndarray:
        """``[vocab_size]`` int64: the modality index (into ``modalities``) of every id."""
        return self._table.copy()

    def _build_modality_table(self) -> np.ndarray:
        table = np.zeros(self.vocab_size, dtype=np.int64)  # specials default to the host modality
        for index, modality in enumerate(self.modalities):
            start, stop = self.id_range(modality)
            table[start:stop] = index
            if index > 0:
                table[self.markers(modality)[0]] = index  # a begin marker opens its modality
        return table

    def modality_of(self, ids: np.ndarray) -> np.ndarray:
        """Modality index of each unified id (specials by the rule in the module docstring)."""
        ids = np.asarray(ids, dtype=np.int64)
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise VocabError(f"token id {int(ids[bad][0])} is outside the vocabulary [0, {self.vocab_size})")
        return self._table[ids]

    def translation_to(self, other: "VocabLayout", used: Optional[Sequence[str]] = None) -> np.ndarray:
        """``[vocab_size]`` int64: each id of this layout -> the same token's id in ``other``, or -1
        where ``other`` lacks it. Specials match by name, modality ids by modality and local id.

        This lets one corpus serve several settings: shards tokenized with text, image and speech
        are read by a text-and-image model through the translation (documents holding speech
        cannot be, and the reader says so). A modality both layouts have with different sizes
        (two tokenizers: VQ codes here, one latent placeholder there) is an error if it is in
        ``used`` (default: every modality), else its ids map to -1: a text-only shard of a corpus
        with VQ images serves the Transfusion setting too.
        """
        table = np.full(self.vocab_size, -1, dtype=np.int64)
        for index, name in enumerate(self._specials):
            if name in other.specials:
                table[index] = other.special(name)
        for modality, size in self.modality_sizes.items():
            if modality not in other.modality_sizes:
                continue
            if other.modality_sizes[modality] != size:
                if used is not None and modality not in used:
                    continue
                raise VocabError(f"{modality} has {size} ids here but {other.modality_sizes[modality]} in "
                                 f"the other layout: they come from different tokenizers")
            start, other_start = self._starts[modality], other.id_range(modality)[0]
            table[start:start + size] = np.arange(other_start, other_start + size)
        return table

    # ---- persistence and checks ----

    def to_dict(self) -> Dict[str, object]:
        return {"modality_sizes": dict(self.modality_sizes), "specials": list(self._specials),
                "vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "VocabLayout":
        layout = cls(dict(data["modality_sizes"]))  # type: ignore[arg-type]
        for key in ("specials", "vocab_size"):
            if key in data and data[key] != layout.to_dict()[key]:
                raise VocabError(f"stored {key}={data[key]!r} disagrees with the layout it describes "
                                 f"({layout.to_dict()[key]!r}); the file was edited or written by another version")
        return layout

    def check_model(self, model_config) -> None:
        """Raise if a ``ModelConfig`` cannot take this vocabulary (size or modality order differ)."""
        if model_config.vocab_size != self.vocab_size:
            raise VocabError(f"model vocab_size={model_config.vocab_size} but the data's vocabulary has "
                             f"{self.vocab_size} ids")
        if list(model_config.modalities) != self.modalities:
            raise VocabError(f"model modalities={list(model_config.modalities)} but the data's vocabulary "
                             f"orders them {self.modalities}")

    def _check_modality(self, modality: str) -> str:
        if modality not in self.modality_sizes:
            raise VocabError(f"unknown modality {modality!r}; this vocabulary has {self.modalities}")
        return modality
