"""Text-loss retention of warm-started runs: each run's text loss on the ``valid`` documents made of
text alone (WordNet, Shakespeare, Milton, fortunes: no image to look at) at its newest checkpoint,
next to the same loss of the models they started from.

    python scripts/text_retention.py runs/compare/warm-start-sources/text-only \\
        runs/compare/chameleon/runs/dense runs/compare/warm-start/runs/*

The validation batches are the trainer's own (``train/validation.py``) with every source that holds
images given weight 0, so every run of one seed is measured on the same text-only documents; the
seed draws them, so runs of other seeds compare within their seed, or all with ``--seed``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Optional

import torch

from mot.data.settings import open_corpus
from mot.runs.model import load_run_model
from mot.train.objective import make_objective
from mot.train.validation import loss_sums, per_modality, validation_batches

IMAGE_SOURCES = ("shapescenes", "digits", "fashion_mnist", "emoji")


def text_only_loss(run: Path, seed: Optional[int] = None) -> float:
    """The text loss of ``run``'s newest checkpoint on the text-only ``valid`` documents (drawn with
    ``seed``; default: the run's own seed, as its trainer drew its validation batches)."""
    config, model = load_run_model(run, log=lambda _: None)
    corpus = open_corpus(config.data.corpus)
    present = {shard["source"] for shard in corpus.manifest["shards"].values()}
    weights = {source: 0 for source in IMAGE_SOURCES if source in present}
    text_only = dataclasses.replace(config, data=dataclasses.replace(config.data, weights=weights),
                                    seed=config.seed if seed is None else seed)
    batches = validation_batches(corpus, text_only, "valid")
    objective = make_objective(text_only, config.model.modalities, 0)
    with torch.no_grad():
        sums, counts = loss_sums(objective, lambda inputs: model(**inputs), batches, len(config.model.modalities),
                                 torch.device("cpu"))
    return per_modality(config.model.modalities, sums, counts)["text"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=None,
                        help="draw every run's batches with this seed (default: each run's own), e.g. to "
                             "measure a seed-0 source on the batches of its seed-1 warm starts")
    args = parser.parse_args()
    print("| run | text-only valid loss |\n|---|---:|")
    for run in args.runs:
        print(f"| {run} | {text_only_loss(run, args.seed):.4f} |")


if __name__ == "__main__":
    main()
