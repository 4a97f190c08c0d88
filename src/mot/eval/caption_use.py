"""Does a Transfusion model's image denoiser read its caption, and does it need the transformer?

For clean validation latents with their captions, noised at a fixed grid of timesteps with noise
fixed per image, the mean squared error of the predicted noise (or velocity, for a flow run) when
the prompt is:

* ``caption``: the image's own caption;
* ``other``: another scene's caption (the captions rolled by one);
* ``none``: no caption (``<bos> <boi>``, the unconditional prompt of classifier-free guidance);
* ``bypass``: its own caption, with the transformer's output zeroed before the patch decoder, so
  only what goes around the transformer (a U-Net's skip connections) predicts the noise.

A model that uses its prompt has ``caption`` below ``other`` and ``none``; one whose patch path
denoises by itself has ``bypass`` close to ``caption``. (The measurements behind the notes on the
U-Net's skips and on the linear patch path in docs/transfusion.md.)
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence

import torch

from ..config import ConfigError
from ..generate.transfusion import SamplingError, TransfusionSampler
from ..objectives.schedulers import make_scheduler

CONDITIONS = ("caption", "other", "none", "bypass")
TIMESTEPS = (100, 300, 500, 700, 900)


@contextmanager
def transformer_output_zeroed(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, the final norm (the transformer's last output, which the patch decoder and
    the text head read) returns zeros."""
    def zeros(module, inputs, output):
        return [torch.zeros_like(part) for part in output]

    handle = model.final_norm.register_forward_hook(zeros)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def caption_use(sampler: TransfusionSampler, latents: torch.Tensor, captions: Sequence[Sequence[int]],
                timesteps: Sequence[int] = TIMESTEPS, seed: int = 0) -> Dict[str, Dict[int, float]]:
    """``{condition: {timestep: mean squared noise error}}`` over ``latents [N, C, h, w]`` (clean)
    and their ``captions`` (unified text ids), for every condition in :data:`CONDITIONS`."""
    if len(latents) != len(captions) or len(captions) < 2:
        raise SamplingError(f"caption_use needs at least 2 images with a caption each, got {len(latents)} "
                            f"latents and {len(captions)} captions")
    scheduler = make_scheduler(sampler.objective, sampler.train_steps, sampler.schedule)
    for t in timesteps:
        if not 0 <= int(t) < sampler.train_steps:
            raise SamplingError(f"timestep {t} is outside [0, {sampler.train_steps})")
    latents = latents.to(sampler.device, torch.float32)
    own: List[Sequence[int]] = list(captions)
    prompts = {"caption": own, "other": own[1:] + own[:1], "none": [[]] * len(own)}
    denoisers = {name: sampler.denoiser(texts) for name, texts in prompts.items()}
    generator = torch.Generator(device=sampler.device).manual_seed(seed)
    noise = torch.randn((len(timesteps), *latents.shape), generator=generator, device=sampler.device)
    errors: Dict[str, Dict[int, float]] = {name: {} for name in CONDITIONS}
    for noise_t, t in zip(noise, timesteps):
        x_t = scheduler.add_noise(latents, noise_t, int(t))
        target = scheduler.target(latents, noise_t)
        for name in CONDITIONS:
            if name == "bypass":
                with transformer_output_zeroed(sampler.model):
                    prediction = denoisers["caption"](x_t, int(t))
            else:
                prediction = denoisers[name](x_t, int(t))
            errors[name][int(t)] = float(torch.mean((prediction.float() - target) ** 2))
    return errors


def caption_use_table(errors: Dict[str, Dict[str, Dict[int, float]]]) -> List[str]:
    """Markdown lines of :func:`caption_use`'s noise errors: a row per label
    (architecture or run) and prompt condition, a column per timestep."""
    steps = list(next(iter(errors.values()))["caption"])
    lines = ["| | prompt | " + " | ".join(f"t = {t}" for t in steps) + " |", "|---|---|" + "---:|" * len(steps)]
    for label, by_condition in errors.items():
        for index, (condition, by_step) in enumerate(by_condition.items()):
            lines.append(f"| {label if index == 0 else ''} | {condition} | "
                         + " | ".join(f"{by_step[t]:.3f}" for t in steps) + " |")
    return lines


def analyze_caption_use(run_dir: str | Path, out: str | Path, scenes: int = 64, seed: int = 0,
                        log: Callable[[str], None] = print) -> Dict[str, Dict[int, float]]:
    """:func:`caption_use` of a Transfusion run on ``scenes`` ShapeScenes validation images of its
    corpus, written to ``out/caption_use.json`` and shown as a table through ``log``."""
    import numpy as np

    from ..generate.pipeline import TransfusionPipeline
    from .validation_scenes import validation_images

    pipeline = TransfusionPipeline.from_run(run_dir, log=log)
    corpus = pipeline.corpus_dir
    found = validation_images(corpus, scenes)
    if len(found) < 2:
        raise ConfigError(f"{corpus} has {len(found)} ShapeScenes validation images; caption-use needs 2 or more")
    latents = torch.from_numpy(np.stack([scene["latent"] for scene in found]))
    errors = caption_use(pipeline.sampler, latents, [scene["caption"] for scene in found], seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "caption_use.json").write_text(json.dumps({"scenes": len(found), "errors": errors}, indent=1))
    log(f"mean squared noise error on {len(found)} validation scenes of {corpus}:")
    log("\n".join(caption_use_table({Path(run_dir).name: errors})))
    log(f"wrote {out}/caption_use.json")
    return errors
