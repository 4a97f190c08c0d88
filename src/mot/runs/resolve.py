"""A recipe resolved against its corpus, once, before anything runs.

The trainer, ``mot train --dry-run`` and ``mot compare`` all call :func:`resolve_recipe`: the model
takes the corpus's vocabulary, modalities and latent channels, the ``architecture`` is applied, and
everything the run will ask of the corpus is checked now, so that a recipe the corpus cannot serve
(a setting it was not prepared for, a validation split it lacks, as users' own JSONL corpora have
no ``heldout`` split, tokenizers other than the recipe's) is refused before step 1, not at the
first evaluation after training has started.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from ..config import COMPONENTS, ConfigError
from ..data.settings import Corpus, CorpusError, open_corpus
from .architecture import architecture_settings
from .recipe import TrainConfig


def resolve_recipe(config: TrainConfig) -> Tuple[TrainConfig, Corpus]:
    """``(the recipe with its final model, its corpus)``; raises :class:`ConfigError` or
    :class:`CorpusError` naming what the corpus lacks or the recipe gets wrong."""
    corpus = open_corpus(config.data.corpus)
    check_tokenizers(config, corpus)
    setting = config.data.setting
    layout = corpus.layout(setting)
    config = resolve_model(config, layout.vocab_size, layout.modalities, corpus.latent_channels)
    layout.check_model(config.model)
    check_tower_settings(config)
    for split in ("train", *config.data.valid_splits):
        try:
            corpus.shard_names(setting, split)
        except CorpusError as error:
            field = "data.valid_splits" if split != "train" else "data.corpus"
            raise CorpusError(f"{field}: {error}") from None
    if setting == "transfusion":
        corpus.patches_per_image(config.model.latent.patch_size)
    return config, corpus


def resolve_model(config: TrainConfig, vocab_size: Optional[int] = None,
                  modalities: Optional[List[str]] = None, latent_channels: Optional[int] = None) -> TrainConfig:
    """The recipe with its final model: the vocabulary, modalities and (Transfusion) latent channels
    of the corpus (given, and ``model_from_data``), then the ``architecture`` applied to those
    modalities. Applying it again changes nothing. Towers named after modalities the corpus lacks
    are an error, and so is a continuous image path outside the transfusion setting or its absence
    inside it."""
    model = config.model
    transfusion = config.data.setting == "transfusion"
    if config.model_from_data and vocab_size is not None:
        extra = sorted(set(model.towers) - set(modalities))
        if extra and not config.architecture:
            raise ConfigError(f"model.towers names {extra}, which the {config.data.setting} corpus does not have "
                              f"(its modalities: {modalities})")
        latent = model.latent
        if transfusion:
            latent = replace(latent, modality=latent.modality or "image",
                             channels=latent_channels if latent_channels is not None else latent.channels)
        model = replace(model, vocab_size=vocab_size, modalities=list(modalities), latent=latent,
                        towers={m: t for m, t in model.towers.items() if m in modalities})
    if transfusion and not model.latent.enabled:
        raise ConfigError("data.setting=transfusion needs model.latent.modality=image (the continuous image path)")
    if not transfusion and model.latent.enabled:
        raise ConfigError(f"model.latent.modality={model.latent.modality!r}: the continuous path belongs to the "
                          f"transfusion setting, not {config.data.setting}")
    if config.architecture:
        model = replace(model, **architecture_settings(config.architecture, model.modalities))
    return replace(config, model=model)


def resolve_for_dry_run(config: TrainConfig, log: Callable[[str], None] = print) -> TrainConfig:
    """:func:`resolve_recipe` when the corpus is prepared; otherwise the recipe's own vocabulary
    (a dry run plans a run before its data exists)."""
    if (Path(config.data.corpus) / "manifest.json").is_file():
        return resolve_recipe(config)[0]
    if config.model_from_data:
        log(f"({config.data.corpus} is not prepared: using the recipe's vocabulary)")
    return resolve_model(config)


def check_tokenizers(config: TrainConfig, corpus: Corpus) -> None:
    """Raise unless ``corpus`` was tokenized with every tokenizer the recipe names (by fingerprint)."""
    expected, actual = config.data.tokenizers, corpus.fingerprints()
    for name, fingerprint in expected.items():
        if actual.get(name) != fingerprint:
            raise ConfigError(f"data.tokenizers.{name}={fingerprint!r}, but {config.data.corpus} was tokenized "
                              f"with {name} {actual.get(name)!r}: the recipe was made for another corpus")


def check_tower_settings(config: TrainConfig) -> None:
    """Raise :class:`ConfigError` unless every tower that ``freeze``, ``optim.tower_lr`` and
    ``init.towers`` name is a tower of the final model, and the frozen towers can be frozen alone
    (every component untied, something left to train, no decay of the embedding's frozen rows)."""
    model, towers = config.model, config.model.tower_names
    for field, named in (("freeze", config.freeze), ("optim.tower_lr", config.optim.tower_lr),
                         ("init.towers", config.init.towers)):
        unknown = [tower for tower in named if tower not in towers]
        if unknown:
            raise ConfigError(f"{field} names {unknown}, which are not towers of this model; its towers are {towers}")
    if not config.freeze:
        return
    frozen = list(config.freeze)
    if len(set(frozen)) == len(towers):
        raise ConfigError(f"freeze={frozen} freezes every tower: nothing would train")
    tied = [c for c in COMPONENTS if c not in model.untied]
    if tied:
        raise ConfigError(f"freeze={frozen}: model.untied={model.untied} shares {tied} between towers, so freezing "
                          f"one tower would freeze them for every tower; untie every component")
    if config.optim.decay_embeddings:
        raise ConfigError(f"freeze={frozen} with optim.decay_embeddings=true: weight decay would shrink the frozen "
                          f"towers' rows of the embedding and head; set optim.decay_embeddings=false")
