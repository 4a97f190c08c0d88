"""The paper's settings as views of one prepared corpus: which shards, which vocabulary, which
mixture, and the loader that reads them.

* ``chameleon``: text and VQ image tokens; every shard without speech (captioned images in
  both orders, text-only documents).
* ``chameleon_speech``: adds the speech modality and the speech shards (speech only,
  speech -> text, text -> speech), mixed with the rest 1:6 as in the paper.
* ``transfusion``: text and continuous images; the latent shards of every source with images
  and the text-only shards, with bidirectional attention inside each image. Each image span
  holds one placeholder token per ``latent_patch_size x latent_patch_size`` latent patch (the
  paper's 2x2 by default): the patch size belongs to the model, so the shards do not fix it.

Splits: ``train``, ``valid`` and, when prepared, ``heldout`` (ShapeScenes with colour-shape pairs
never seen in training: the compositional test set).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import MotError
from ..tokenizers.vocab import VocabLayout
from .loader import Loader
from .shards import ShardReader

SETTINGS = ("chameleon", "chameleon_speech", "transfusion")
#: the paper's Transfusion patch: 2x2 latent pixels per token
LATENT_PATCH_SIZE = 2
#: speech documents : all other documents, as the paper mixes them (Chameleon+Speech)
SPEECH_MIXTURE = (1, 6)


#: what every manifest holds, and what :class:`Corpus` reads without checking
MANIFEST_KEYS = ("vocab", "shards", "tokenizers")


class CorpusError(MotError, ValueError):
    """A prepared corpus is missing, or lacks what a setting needs; the message says what."""


@dataclass(frozen=True)
class Corpus:
    """A directory written by ``mot prepare`` and its ``manifest.json``."""

    directory: Path
    manifest: dict

    # ---- vocabularies ----

    def layout(self, setting: str) -> VocabLayout:
        """The vocabulary a model of ``setting`` uses on this corpus."""
        _check_setting(setting)
        if setting == "transfusion":
            if "latent" not in self.manifest:
                raise CorpusError(f"{self.directory} has no latent shards: prepare it with image_tokenizers "
                                  f"including vae for the transfusion setting")
            return VocabLayout.from_dict(self.manifest["latent"]["vocab"])
        full = VocabLayout.from_dict(self.manifest["vocab"])
        if "image" not in full.modalities:
            raise CorpusError(f"{self.directory} has no image tokens: prepare it with image_tokenizers "
                              f"including vq for the {setting} setting")
        wanted = ["text", "image"] + (["speech"] if setting == "chameleon_speech" else [])
        if "speech" in wanted and "speech" not in full.modalities:
            reason = self.manifest.get("skipped_sources", {}).get("speech", "speech_utterances is 0")
            raise CorpusError(f"{self.directory} has no speech ({reason}); the chameleon_speech setting needs it")
        return VocabLayout({m: full.modality_sizes[m] for m in wanted})

    # ---- shards ----

    def shard_names(self, setting: str, split: str) -> List[str]:
        """Manifest keys (paths under the corpus) of the shards ``setting`` reads for ``split``."""
        _check_setting(setting)
        shards = self.manifest["shards"]
        chosen = []
        latent_sources = {s["source"] for s in shards.values() if s["kind"] == "latents"}
        for key, shard in shards.items():
            if shard["split"] != split:
                continue
            uses_speech = shard["tokens_per_modality"].get("speech", 0) > 0
            if setting == "transfusion":
                keep = shard["kind"] == "latents" or (shard["source"] not in latent_sources and not uses_speech
                                                      and shard["tokens_per_modality"].get("image", 0) == 0)
            else:
                keep = shard["kind"] == "tokens" and (setting == "chameleon_speech" or not uses_speech)
            if keep:
                chosen.append(key)
        if not chosen:
            splits = sorted({s["split"] for s in shards.values()})
            raise CorpusError(f"{self.directory} has no {split!r} shards for the {setting} setting "
                              f"(its splits: {splits})")
        return chosen

    def _shard_names_or_none(self, setting: str, split: str) -> List[str]:
        try:
            return self.shard_names(setting, split)
        except CorpusError:
            return []

    @property
    def latent_channels(self) -> Optional[int]:
        """Channels of the VAE latents (``None`` when the corpus has no latent shards)."""
        latent = self.manifest.get("latent")
        return int(latent["latent_shape"][0]) if latent else None

    def patches_per_image(self, latent_patch_size: int = LATENT_PATCH_SIZE) -> int:
        """Placeholder tokens per image in the transfusion setting: the patches of a latent."""
        self.layout("transfusion")
        _, height, width = self.manifest["latent"]["latent_shape"]
        if latent_patch_size < 1 or height % latent_patch_size or width % latent_patch_size:
            raise CorpusError(f"latent_patch_size={latent_patch_size} does not divide the {height}x{width} latents")
        return (height // latent_patch_size) * (width // latent_patch_size)

    def datasets(self, setting: str, split: str, weights: Optional[Mapping[str, float]] = None,
                 latent_patch_size: int = LATENT_PATCH_SIZE) -> List[Tuple[str, ShardReader, float]]:
        """``[(name, reader, weight)]`` for the :class:`~.loader.Loader`.

        Weights default to the documents in each shard (every document equally likely), with the
        speech shards scaled to ``SPEECH_MIXTURE`` of the draws. ``weights`` (source name ->
        weight) replaces the weight of the shards of the sources it names; a weight of 0 leaves a
        source out (a text-only model trained on a multi-modal corpus), but not every source.
        """
        layout = self.layout(setting)
        names = self.shard_names(setting, split)
        shards = self.manifest["shards"]
        # a recipe's weights serve every split: a source may be missing from one (heldout) but not from all
        known = {shards[key]["source"] for other in {shard["split"] for shard in shards.values()}
                 for key in self._shard_names_or_none(setting, other)}
        unknown = set(weights or {}) - known
        if unknown:
            raise CorpusError(f"weights name sources {sorted(unknown)} that the {setting} shards do not "
                              f"have ({sorted(known)})")
        counts = {n: float(shards[n]["documents"]) for n in names}
        speech = [n for n in names if shards[n]["tokens_per_modality"].get("speech", 0) > 0]
        if speech and len(speech) < len(names):
            speech_total, rest_total = sum(counts[n] for n in speech), sum(counts[n] for n in names if n not in speech)
            scale = SPEECH_MIXTURE[0] / SPEECH_MIXTURE[1] * rest_total / speech_total
            counts.update({n: counts[n] * scale for n in speech})
        for n in names:
            if shards[n]["source"] in (weights or {}):
                counts[n] = float(weights[shards[n]["source"]])
        names = [n for n in names if counts[n] > 0]
        if not names:
            raise CorpusError(f"weights {dict(weights or {})} leave no {split} shard of the {setting} setting to read")
        patches = self.patches_per_image(latent_patch_size) if setting == "transfusion" else 1
        return [(n, ShardReader(self.directory / n, layout, patches_per_image=patches), counts[n]) for n in names]

    def loader(self, setting: str, split: str, *, seq_len: int, batch_rows: int,
               modality_tower_index: Sequence[int], seed: int = 0, rank: int = 0, world_size: int = 1,
               weights: Optional[Mapping[str, float]] = None, latent_patch_size: int = LATENT_PATCH_SIZE,
               caption_dropout: float = 0.0) -> Loader:
        """The loader of ``setting`` over ``split``; see :class:`~.loader.Loader` (``caption_dropout``
        is for the transfusion setting only)."""
        continuous = setting == "transfusion"
        return Loader(self.datasets(setting, split, weights, latent_patch_size), layout=self.layout(setting),
                      seq_len=seq_len,
                      batch_rows=batch_rows, modality_tower_index=modality_tower_index,
                      bidirectional=["image"] if continuous else (), continuous="image" if continuous else None,
                      seed=seed, rank=rank, world_size=world_size, caption_dropout=caption_dropout)

    def fingerprints(self) -> Dict[str, str]:
        """Tokenizer name -> content hash, to check a model was trained on this corpus's tokens."""
        return {name: entry["fingerprint"] for name, entry in self.manifest["tokenizers"].items()}


def open_corpus(directory: str | Path) -> Corpus:
    """Open a prepared corpus; a missing or unreadable manifest is a :class:`CorpusError`."""
    directory = Path(directory)
    path = directory / "manifest.json"
    if not path.is_file():
        raise CorpusError(f"{path} does not exist: run `mot prepare --config configs/data/<name>.yaml` first")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:  # bad JSON, bad UTF-8 (a ValueError too), absurd nesting
        raise CorpusError(f"{path} is not valid JSON ({error}); prepare the corpus again") from None
    if not isinstance(manifest, dict):
        raise CorpusError(f"{path} holds a {type(manifest).__name__}, not a JSON object; prepare the corpus again")
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise CorpusError(f"{path} lacks {missing}; prepare the corpus again")
    return Corpus(directory, manifest)


def _check_setting(setting: str) -> None:
    if setting not in SETTINGS:
        raise CorpusError(f"unknown setting {setting!r}; choose one of {list(SETTINGS)}")
