"""What ``mot train`` does with its arguments: a dry run, or a run, with errors as messages."""

from __future__ import annotations

import sys
from typing import Sequence

from rich.table import Table

from ..config import ConfigError
from .recipe import load_recipe, resolve_model

#: exit status of a run stopped by the guard (bad input and bad configs exit with 2)
TRAINING_FAILED = 1


def train_command(path: str, overrides: Sequence[str], dry: bool, console) -> int:
    from ..data.loader import LoaderError
    from ..data.settings import CorpusError, open_corpus
    from ..data.shards import ShardError
    from ..model.io import CheckpointError
    from ..tokenizers.vocab import VocabError
    from .dry_run import dry_run
    from .trainer import Trainer, TrainingError

    config = load_recipe(path, overrides)
    if dry:
        vocab_size = modalities = None
        try:  # the corpus's vocabulary when it is there, else the recipe's
            layout = open_corpus(config.data.corpus).layout(config.data.setting)
            vocab_size, modalities = layout.vocab_size, layout.modalities
        except CorpusError:
            if config.model_from_data:
                console.out(f"({config.data.corpus} is not prepared: using the recipe's vocabulary)")
        config = resolve_model(config, vocab_size, modalities)
        report = dry_run(config)
        table = Table(title=f"{config.name}: {config.steps:,} steps (meta device, nothing allocated)", show_header=False)
        table.add_column("")
        table.add_column("", justify="right")
        for name, value in report.lines().items():
            table.add_row(name, value)
        console.print(table)
        return 0
    try:
        Trainer(config, log=console.out).train()
    except (CorpusError, ShardError, LoaderError, CheckpointError, VocabError) as error:
        raise ConfigError(str(error)) from None
    except TrainingError as error:
        print(f"mot: training stopped: {error}", file=sys.stderr)
        return TRAINING_FAILED
    return 0
