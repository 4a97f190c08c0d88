"""Samples for a Transfusion comparison's report, the same for every architecture:

* a grid of images for the experiment's prompts, from the same initial noise (a row per
  architecture and draw, a column per prompt);
* text -> image, scored: an image for the caption of each of ``scored`` single-object validation
  scenes, and the share whose background, object colour and shape are the caption's
  (:mod:`.shape_scores`; its accuracy on VAE reconstructions of rendered scenes is the ceiling);
* image -> text, scored: a greedy caption of each of those scenes' images, and the share that
  name its attributes (``shape_scores.caption_names``); the first ``captions`` are shown beside
  the true captions;
* whether the denoiser reads the caption: its noise error on those scenes with their own caption,
  another's and none (:mod:`.caption_use`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..data.settings import open_corpus
from ..generate.pipeline import TransfusionPipeline
from ..generate.transfusion import ImageSampling
from .caption_use import caption_use
from .experiment import SamplesConfig
from .plots import save_figure
from .shape_scores import ShapeScorer, accuracy, caption_accuracy, parse_caption

GRID_FILE = "samples.png"


def validation_images(corpus_dir: str | Path, count: int, keep: Optional[Callable[[List[int]], bool]] = None,
                      source: str = "shapescenes") -> List[dict]:
    """The first ``count`` images of ``source``'s validation latent shard whose caption ``keep``
    accepts: ``{"latent", "caption"}`` (the caption as unified text ids, read from the document
    around the image)."""
    corpus = open_corpus(corpus_dir)
    layout = corpus.layout("transfusion")
    text_start, text_stop = layout.id_range(layout.modalities[0])
    found: List[dict] = []
    for name, reader, _ in corpus.datasets("transfusion", "valid"):
        if corpus.manifest["shards"][name]["source"] != source:
            continue
        for index in range(len(reader)):
            stream = reader.stream(index)
            if stream.latents is None or len(stream.latents) != 1:
                continue
            caption = [int(t) for t in stream.tokens if text_start <= t < text_stop]
            if keep is None or keep(caption):
                found.append({"latent": stream.latents[0], "caption": caption})
            if len(found) == count:
                return found
    return found


def draw_samples(pipelines: Dict[str, TransfusionPipeline], samples: SamplesConfig, corpus_dir: str | Path,
                 directory: Path, log: Callable[[str], None] = print) -> dict:
    """Write the sample grid to ``directory``; return what the report shows (see the module docstring)."""
    sampling = ImageSampling(samples.steps, samples.method, samples.cfg_scale, seed=samples.seed)
    result = {"prompts": list(samples.prompts), "sampling": vars(sampling), "captions": [], "scores": {}}
    prompts = [p for p in samples.prompts for _ in range(samples.per_prompt)]
    if prompts:
        images = {}
        for label, pipeline in pipelines.items():
            log(f"samples: {label} draws {len(prompts)} images ({samples.steps} {samples.method} steps, "
                f"guidance {samples.cfg_scale})")
            images[label] = pipeline.text_to_image(prompts, sampling)
        result["grid"] = sample_grid(images, samples.prompts, samples.per_prompt, directory / GRID_FILE)
    if samples.scored:
        result.update(_scored(pipelines, samples, sampling, corpus_dir, log))
    return result


def _scored(pipelines: Dict[str, TransfusionPipeline], samples: SamplesConfig, sampling: ImageSampling,
            corpus_dir: str | Path, log: Callable[[str], None]) -> dict:
    import torch

    reference = next(iter(pipelines.values()))  # every run of an experiment reads one corpus
    scenes = validation_images(corpus_dir, samples.scored,
                               keep=lambda ids: parse_caption(reference.decode_text(ids)) is not None)
    if not scenes:
        return {}
    captions = [reference.decode_text(s["caption"]) for s in scenes]
    truth = [parse_caption(c) for c in captions]
    log(f"samples: fitting the shape scorer on {samples.scorer_scenes} rendered scenes")
    scorer = ShapeScorer.fit(reference.reconstruct, count=samples.scorer_scenes, seed=samples.seed)
    scores = {"scenes": len(scenes), "ceiling": scorer.self_check(reference.reconstruct, seed=samples.seed + 1)}
    latents = torch.from_numpy(np.stack([s["latent"] for s in scenes]))
    written = {}
    for label, pipeline in pipelines.items():
        log(f"samples: {label} draws and captions {len(scenes)} validation scenes")
        drawn = pipeline.text_to_image(captions, sampling)
        written[label] = [pipeline.decode_text(c) for c in pipeline.sampler.image_to_text(latents)]
        scores[label] = {"text_to_image": accuracy(scorer.read(drawn), truth),
                         "image_to_text": caption_accuracy(written[label], truth)}
        if len(scenes) >= 2:  # "another scene's caption" needs a second scene
            scores[label]["caption_use"] = caption_use(pipeline.sampler, latents, [s["caption"] for s in scenes],
                                                       seed=samples.seed)
    shown = [{"true": caption, **{label: written[label][i] for label in pipelines}}
             for i, caption in enumerate(captions[:samples.captions])]
    return {"scores": scores, "captions": shown}


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
