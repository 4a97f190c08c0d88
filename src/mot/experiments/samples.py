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

from pathlib import Path
from typing import Callable, Dict

import numpy as np

from ..eval.caption_use import caption_use
from ..eval.shape_scores import ShapeScorer, accuracy, caption_accuracy, parse_caption
from ..eval.validation_scenes import validation_images
from ..generate.image_files import sample_grid
from ..generate.pipeline import TransfusionPipeline
from ..generate.transfusion import ImageSampling
from .experiment import SamplesConfig

GRID_FILE = "samples.png"


def draw_samples(pipelines: Dict[str, TransfusionPipeline], samples: SamplesConfig, corpus_dir: str | Path,
                 directory: Path, log: Callable[[str], None] = print) -> dict:
    """Write the sample grid to ``directory``; return what the report shows (see the module docstring)."""
    sampling = ImageSampling(samples.steps, samples.method, samples.cfg_scale, seed=samples.seed)
    # each run's sampler (its objective's default when none is set), checked before any is drawn
    methods = {label: pipeline.sampler.sampling_method(samples.method) for label, pipeline in pipelines.items()}
    result = {"prompts": list(samples.prompts), "sampling": vars(sampling), "methods": methods, "captions": [],
              "scores": {}}
    prompts = [p for p in samples.prompts for _ in range(samples.per_prompt)]
    if prompts:
        images = {}
        for label, pipeline in pipelines.items():
            log(f"samples: {label} draws {len(prompts)} images ({samples.steps} {methods[label]} steps, "
                f"guidance {samples.cfg_scale})")
            images[label] = pipeline.text_to_image(prompts, sampling, log=log)
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
        drawn = pipeline.text_to_image(captions, sampling, log=log)
        written[label] = [pipeline.decode_text(c) for c in pipeline.sampler.image_to_text(latents)]
        scores[label] = {"text_to_image": accuracy(scorer.read(drawn), truth),
                         "image_to_text": caption_accuracy(written[label], truth)}
        if len(scenes) >= 2:  # "another scene's caption" needs a second scene
            scores[label]["caption_use"] = caption_use(pipeline.sampler, latents, [s["caption"] for s in scenes],
                                                       seed=samples.seed)
    shown = [{"true": caption, **{label: written[label][i] for label in pipelines}}
             for i, caption in enumerate(captions[:samples.captions])]
    return {"scores": scores, "captions": shown}
