"""``mot eval RUN``: a run's checkpoints measured by the metrics of :mod:`.catalogue`, written into
the run as ``eval.json`` (every checkpoint's numbers, keyed by step) and ``eval.md`` (a table).

Evaluating a checkpoint replaces only that checkpoint's entries for the metrics asked for: the
numbers of other checkpoints, and of other metrics, stay. The file is written whole under a
temporary name and renamed, so an interrupted evaluation leaves the previous file. For a fixed
seed the numbers are the same on every run: validation losses are the trainer's own (same
batches, same sums: ``mot eval`` at the last step reproduces the logged losses exactly, on the
device and precision the run trained with), and every random draw of the generation metrics is
seeded.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..config import ConfigError
from ..data.settings import Corpus, open_corpus
from ..io import atomic_write
from ..generate.pipelines import pipeline_for_run
from ..runs.model import load_run_model, run_checkpoints
from ..runs.recipe import TrainConfig
from ..train.objective import make_objective
from ..train.validation import loss_sums, per_modality, validation_batches
from .catalogue import METRICS, check_metrics, supported
from .conditional import conditional_losses, paired_documents
from .eval_report import eval_markdown

EVAL_JSON, EVAL_MD = "eval.json", "eval.md"
FORMAT = 1


@dataclass
class EvalOptions:
    """What ``mot eval`` measures, and on how much."""

    #: "latest", "all", a step, or steps separated by commas
    checkpoint: str = "latest"
    #: the corpus splits (default: the run's validation splits)
    splits: Optional[List[str]] = None
    #: metric names (default: every metric the run supports)
    metrics: Optional[List[str]] = None
    #: documents per source for the conditional perplexities
    pairs: int = 64
    #: generated images, captions and utterances per generation metric
    samples: int = 100
    seed: int = 0
    #: the image source whose evaluation set the image metrics use
    source: str = "shapescenes"
    #: sampling temperature of drawn image tokens and speech units (Chameleon settings)
    temperature: float = 1.0
    #: Transfusion: denoising steps (of the run's objective's default method) and guidance
    denoising_steps: int = 50
    cfg_scale: float = 3.0


def evaluate_run(run_dir: str | Path, options: EvalOptions = EvalOptions(), log: Callable[[str], None] = print,
                 out: Optional[str | Path] = None) -> Dict[int, dict]:
    """Evaluate the chosen checkpoints of ``run_dir``; returns ``{step: numbers}`` of those
    evaluated (and writes them, merged with what was there, to ``eval.json`` / ``eval.md`` in
    ``out``, by default the run directory)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    read_results(out)  # a record that cannot be merged into fails now, not after the evaluation
    config, checkpoints = run_checkpoints(run_dir)
    metrics = run_metrics(config, options.metrics)
    splits = list(options.splits or config.data.valid_splits)
    corpus = open_corpus(config.data.corpus)
    for split in splits:
        corpus.shard_names(config.data.setting, split)  # a split the corpus lacks fails here, named
    results = {}
    for step in checkpoint_steps(checkpoints.steps(), options.checkpoint, run_dir):
        log(f"{run_dir.name}: evaluating step {step} ({', '.join(metrics)})")
        results[step] = evaluate_checkpoint(run_dir, step, config, corpus, metrics, splits, options, log)
        record_results(out, run_dir.name, step, results[step], options)
    return results


def run_metrics(config: TrainConfig, names: Optional[Sequence[str]]) -> List[str]:
    """The metrics asked for (checked against the run), or every one the run supports."""
    setting, modalities = config.data.setting, list(config.model.modalities)
    return check_metrics(names, setting, modalities) if names else supported(setting, modalities)


def checkpoint_steps(saved: Sequence[int], choice: str, run_dir: Path) -> List[int]:
    """The steps ``choice`` ("latest", "all", a step or steps separated by commas) names among
    the ``saved`` ones."""
    if not saved:
        raise ConfigError(f"{run_dir} has no checkpoint to evaluate")
    if choice == "latest":
        return [max(saved)]
    if choice == "all":
        return list(saved)
    try:
        steps = [int(part) for part in choice.split(",")]
    except ValueError:
        raise ConfigError(f"--checkpoint {choice}: expected latest, all, a step number or steps separated by "
                          f"commas") from None
    missing = [step for step in steps if step not in saved]
    if missing:
        raise ConfigError(f"--checkpoint {choice}: {run_dir} has no checkpoint of step {missing[0]}; it has "
                          f"checkpoints of steps {list(saved)}")
    return sorted(set(steps))


def evaluate_checkpoint(run_dir: Path, step: int, config: TrainConfig, corpus: Corpus, metrics: Sequence[str],
                        splits: Sequence[str], options: EvalOptions, log: Callable[[str], None]) -> dict:
    """``{"metrics": {name: numbers}, "seconds": {name: s}}`` of the checkpoint of ``step``.

    The checkpoint is loaded once: into the run's pipeline when a metric generates (its model
    serves the losses too), else as the model alone."""
    generation = [name for name in metrics if METRICS[name].generates]
    pipeline = pipeline_for_run(run_dir, log, step) if generation else None
    model = pipeline.model if pipeline is not None else load_run_model(run_dir, log, step)[1]
    numbers: Dict[str, object] = {}
    seconds: Dict[str, float] = {}
    for name in metrics:
        if METRICS[name].generates:
            continue
        started = time.perf_counter()
        if name == "loss":
            numbers[name] = {split: validation_losses(config, model, corpus, split) for split in splits}
        elif name == "causal_loss":  # the paper's caveat: Expert-Choice sees later tokens
            with model.causal_routing():
                numbers[name] = {split: validation_losses(config, model, corpus, split) for split in splits}
        elif name == "perplexity":
            numbers[name] = {split: conditional_perplexities(config, model, corpus, split, options.pairs)
                             for split in splits}
        seconds[name] = round(time.perf_counter() - started, 2)
    if generation:
        from .generation_scores import generation_metrics

        found, timed = generation_metrics(pipeline, config, corpus, generation, splits, options, log)
        numbers.update(found)
        seconds.update(timed)
    return {"metrics": numbers, "seconds": seconds}


@torch.no_grad()
def validation_losses(config: TrainConfig, model, corpus, split: str) -> Dict[str, Optional[float]]:
    """Mean validation loss per modality of ``split``: the trainer's batches and sums (one process)."""
    modalities = list(config.model.modalities)
    objective = make_objective(config, modalities, rank=0)
    device = next(model.parameters()).device
    sums, counts = loss_sums(objective, lambda inputs: model(**inputs), validation_batches(corpus, config, split),
                             len(modalities), device)
    return per_modality(modalities, sums, counts)


def conditional_perplexities(config: TrainConfig, model, corpus, split: str, per_source: int) -> dict:
    """:func:`.conditional.conditional_losses` for each modality besides text, on ``split``."""
    setting, layout = config.data.setting, corpus.layout(config.data.setting)
    found = {}
    for modality in layout.modalities[1:]:
        pairs = paired_documents(corpus, setting, split, modality, per_source)
        if pairs:
            found.update(conditional_losses(model, layout, pairs, modality))
    return found


# ------------------------------------------------------------------------------- the record --

def read_results(directory: str | Path) -> dict:
    """The ``eval.json`` in ``directory`` (an empty record when there is none)."""
    path = Path(directory) / EVAL_JSON
    if not path.is_file():
        return {"format": FORMAT, "checkpoints": {}}
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); move it aside to start a new record") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("checkpoints"), dict):
        raise ConfigError(f"{path} is not an eval record of format {FORMAT}; move it aside to start a new one")
    return data


def record_results(directory: Path, run_name: str, step: int, result: dict, options: EvalOptions) -> None:
    """Merge ``result`` into ``directory/eval.json`` under ``step`` (only its metrics are replaced)
    and rewrite ``eval.md``."""
    data = read_results(directory)
    entry = data["checkpoints"].setdefault(str(step), {"metrics": {}, "seconds": {}, "options": {}})
    entry["metrics"].update(result["metrics"])
    entry["seconds"].update(result["seconds"])
    for name in result["metrics"]:
        entry["options"][name] = asdict(options)
    data["checkpoints"] = dict(sorted(data["checkpoints"].items(), key=lambda item: int(item[0])))
    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    atomic_write(directory / EVAL_JSON, lambda tmp: Path(tmp).write_text(text))
    markdown = eval_markdown(run_name, data)
    atomic_write(directory / EVAL_MD, lambda tmp: Path(tmp).write_text(markdown))
