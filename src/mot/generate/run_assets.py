"""A trained run and what generating with it needs: its model (loaded without an optimizer) and
the prepared corpus whose tokenizers it was trained with."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

from ..data.settings import Corpus, open_corpus
from ..model.transformer import MoTModel
from ..runs.model import load_run_model
from ..runs.recipe import TrainConfig
from ..runs.resolve import check_tokenizers
from .logits import GenerationError


def load_generation_run(run_dir: str | Path, settings: Sequence[str], purpose: str,
                        log: Callable[[str], None] = print,
                        step: Optional[int] = None) -> Tuple[TrainConfig, MoTModel, Corpus]:
    """``(config, model, corpus)`` of ``run_dir``'s checkpoint of ``step`` (default: the newest
    complete one); the run must have
    been trained in one of ``settings`` (``purpose`` says for what, in the error), and the corpus's
    tokenizers must be the ones the recipe names."""
    config, model = load_run_model(run_dir, log, step)
    if config.data.setting not in settings:
        raise GenerationError(f"{run_dir} was trained in the {config.data.setting} setting; {purpose} needs a run "
                              f"of the {' or '.join(settings)} setting")
    corpus = open_corpus(config.data.corpus)
    check_tokenizers(config, corpus)
    return config, model, corpus


def tokenizer_directory(corpus: Corpus, name: str, purpose: str) -> Path:
    """``corpus/tokenizers/<name>``, which must exist: a run without the tokenizer it needs is named."""
    path = corpus.directory / "tokenizers" / name
    if not path.is_dir():
        raise GenerationError(f"{corpus.directory} has no {name} tokenizer ({path} is missing); {purpose} needs it")
    return path
