"""Samples for a Transfusion comparison's report: every architecture draws images for the same
prompts from the same initial noise (one grid, a row per architecture and draw, a column per
prompt), and captions the same validation images (a table beside the true captions)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from ..data.settings import open_corpus
from ..generate.pipeline import TransfusionPipeline
from ..generate.transfusion import ImageSampling
from .experiment import SamplesConfig
from .plots import save_figure

GRID_FILE = "samples.png"


def validation_images(corpus_dir: str | Path, count: int, source: str = "shapescenes") -> List[dict]:
    """The first ``count`` images of ``source``'s validation latent shard: ``{"latent", "caption"}``
    (the caption as unified text ids, read from the document around the image)."""
    corpus = open_corpus(corpus_dir)
    layout = corpus.layout("transfusion")
    text_start, text_stop = layout.id_range(layout.modalities[0])
    found = []
    for name, reader, _ in corpus.datasets("transfusion", "valid"):
        if corpus.manifest["shards"][name]["source"] != source or reader.latents is None:
            continue
        for index in range(len(reader)):
            stream = reader.stream(index)
            if stream.latents is None or len(stream.latents) != 1:
                continue
            caption = [int(t) for t in stream.tokens if text_start <= t < text_stop]
            found.append({"latent": stream.latents[0], "caption": caption})
            if len(found) == count:
                return found
    return found


def draw_samples(pipelines: Dict[str, TransfusionPipeline], samples: SamplesConfig, corpus_dir: str | Path,
                 directory: Path, log: Callable[[str], None] = print) -> dict:
    """Write the sample grid to ``directory``; return ``{"grid": file, "prompts", "captions"}``."""
    import torch

    sampling = ImageSampling(samples.steps, samples.method, samples.cfg_scale, seed=samples.seed)
    prompts = [p for p in samples.prompts for _ in range(samples.per_prompt)]
    images = {}
    for label, pipeline in pipelines.items():
        log(f"samples: {label} draws {len(prompts)} images ({samples.steps} {samples.method} steps, "
            f"guidance {samples.cfg_scale})")
        images[label] = pipeline.text_to_image(prompts, sampling) if prompts else np.zeros((0, 1, 1, 3), np.uint8)
    result = {"prompts": list(samples.prompts), "sampling": vars(sampling), "captions": []}
    if prompts:
        result["grid"] = sample_grid(images, samples.prompts, samples.per_prompt, directory / GRID_FILE)
    shown = validation_images(corpus_dir, samples.captions)
    if shown:
        reference = next(iter(pipelines.values()))
        latents = torch.from_numpy(np.stack([s["latent"] for s in shown]))
        written = {label: [p.decode_text(c) for c in p.sampler.image_to_text(latents)]
                   for label, p in pipelines.items()}
        result["captions"] = [{"true": reference.decode_text(s["caption"]),
                               **{label: written[label][i] for label in pipelines}} for i, s in enumerate(shown)]
    return result


def sample_grid(images: Dict[str, np.ndarray], prompts: List[str], per_prompt: int, path: Path) -> str:
    """A PNG of ``images`` (label -> ``uint8 [len(prompts) * per_prompt, S, S, 3]``, each prompt's
    draws together): a column per prompt, ``per_prompt`` rows per label. Returns the file's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, per = len(prompts), per_prompt
    rows = len(images) * per
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.9 * rows + 0.8), squeeze=False)
    for block, (label, drawn) in enumerate(images.items()):
        for column in range(columns):
            for draw in range(per):
                axis = axes[block * per + draw, column]
                axis.imshow(drawn[column * per + draw], interpolation="nearest")
                axis.set_xticks([])
                axis.set_yticks([])
                if column == 0:
                    axis.set_ylabel(label if draw == 0 else "", fontsize=10)
                if block == 0 and draw == 0:
                    axis.set_title("\n".join(textwrap.wrap(prompts[column], 22)), fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path, dpi=100).name
