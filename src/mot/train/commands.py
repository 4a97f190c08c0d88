"""What ``mot train`` does with its arguments: a dry run, or a run, with errors as messages."""

from __future__ import annotations

import contextlib
from typing import Sequence

from rich.table import Table

from ..errors import MotError
from .recipe import load_recipe, resolve_model


class TrainingFailed(MotError):
    """Raised by :func:`training_errors` when the guard stopped a run: the CLI's exit status 1,
    not the 2 of bad input, since the recipe and data were fine until the step it names."""


@contextlib.contextmanager
def training_errors():
    """A run stopped by the guard (:class:`~mot.train.trainer.TrainingError`) becomes
    :class:`TrainingFailed`; every other error passes through to the CLI's own mapping."""
    from .trainer import TrainingError

    try:
        yield
    except TrainingError as error:
        raise TrainingFailed(f"training stopped: {error}") from None


def train_command(path: str, overrides: Sequence[str], dry: bool, console) -> int:
    from ..data.settings import CorpusError, open_corpus
    from .distributed import shutdown
    from .dry_run import dry_run
    from .trainer import Trainer

    config = load_recipe(path, overrides)
    if dry:
        vocab_size = modalities = channels = None
        try:  # the corpus's vocabulary when it is there, else the recipe's
            corpus = open_corpus(config.data.corpus)
            layout = corpus.layout(config.data.setting)
            vocab_size, modalities, channels = layout.vocab_size, layout.modalities, corpus.latent_channels
        except CorpusError:
            if config.model_from_data:
                console.out(f"({config.data.corpus} is not prepared: using the recipe's vocabulary)")
        config = resolve_model(config, vocab_size, modalities, channels)
        report = dry_run(config)
        table = Table(title=f"{config.name}: {config.steps:,} steps (meta device, nothing allocated)", show_header=False)
        table.add_column("")
        table.add_column("", justify="right")
        for name, value in report.lines().items():
            table.add_row(name, value)
        console.print(table)
        return 0
    with training_errors():
        trainer = Trainer(config, log=console.out)
        trainer.train()
        shutdown(trainer.context)
    return 0
