"""An experiment: one recipe, several architectures trained on it under identical conditions.

``configs/experiments/<name>.yaml``::

    name: chameleon
    recipe: configs/recipes/tiny/chameleon.yaml
    overrides: [steps=600]                  # for every architecture
    architectures:                          # label -> the overrides that make it
      dense: [architecture=dense]
      mot: [architecture=mot]
      moe4x: [architecture=moe4x]
    reference: dense                        # step matching is against this one
    variants:
      gpu: [model.d_model=512, steps=5000, device=cuda]
    flops_matched: true                     # false: architectures may cost different FLOPs per token
    samples:                                # Transfusion: images for the same prompts from each
      prompts: ["a red circle on a blue background"]
    eval: {every: 200, metrics: [fid, cider]}  # metrics over training (``mot eval``; metric_curves.py)
    seeds: [0, 1, 2]                        # repeat over seeds: step matching as median and range
    series: {axis: parameters, points: {w64: [model.d_model=64], w128: []}}  # one comparison per point

Every architecture gets the same data order, seed and schedule (only the model differs), and its
own run directory ``out_dir/<name>/runs/<label>``; the report goes to ``out_dir/<name>/report``.
With ``flops_matched: false`` (the paper's "760M MoT vs 1.4B dense" comparison) the FLOPs ratio
is reported instead of enforced. With ``seeds``, every architecture trains once per seed (initial
weights and data order): the recipe's own seed in ``runs/<label>``, the others in
``runs/seed-<seed>/<label>`` (``seeds.py`` summarises them; ``{runs}`` in an override names that
seed's folder, for a warm start's source). With ``series``, every point is such a
comparison in ``out_dir/<name>/<point>`` and ``series.py`` puts them side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..config import ConfigError, check_number, load_config
from ..runs.recipe import TrainConfig, load_recipe
from .series import SeriesConfig

#: recipe fields an architecture may not change: what "identical conditions" means
SHARED_FIELDS = ("data", "optim", "steps", "seed", "log_every", "eval_every", "precision")


@dataclass
class SamplesConfig:
    """Images each architecture of a Transfusion experiment draws for the same ``prompts`` (the
    report's sample grid); images it draws for the captions of ``scored`` validation scenes and
    captions it writes for their images, scored by the attributes they show or name."""

    prompts: List[str] = field(default_factory=list)
    #: denoising steps and method (the paper: 250 DDPM steps); no method: each run's objective's
    #: default (ddpm for DDPM runs, euler for flow runs)
    steps: int = 250
    method: Optional[str] = None
    cfg_scale: float = 3.0
    seed: int = 0
    #: images of each prompt (one column per prompt, ``per_prompt`` rows per architecture)
    per_prompt: int = 2
    #: captions shown in the report (of the scored validation images)
    captions: int = 8
    #: single-object validation scenes drawn from their captions and captioned from their images,
    #: both scored exactly (``shape_scores.py``); 0: none
    scored: int = 64
    #: rendered scenes the shape scorer is fitted on
    scorer_scenes: int = 2000


@dataclass
class EvalSchedule:
    """Metrics over training: each architecture's checkpoints at every multiple of ``every`` steps
    (kept for it: ``keep_every``) and its last one, measured by ``mot eval``. 0: none."""

    every: int = 0
    #: ``mot eval`` metrics (default: every one the setting supports except ``loss``, which the
    #: trainer logs already)
    metrics: List[str] = field(default_factory=list)
    #: generated images, captions and utterances per generation metric and split
    samples: int = 64
    #: documents per source for the conditional perplexities
    pairs: int = 32
    #: corpus splits (default: the recipe's validation splits)
    splits: List[str] = field(default_factory=list)
    seed: int = 0
    #: Transfusion: denoising steps per drawn image
    denoising_steps: int = 25


@dataclass
class ExperimentConfig:
    """What ``mot compare`` trains and compares."""

    name: str = "experiment"
    #: the shared training recipe (a path relative to the working directory)
    recipe: str = "configs/recipes/tiny/chameleon.yaml"
    overrides: List[str] = field(default_factory=list)
    architectures: Dict[str, List[str]] = field(default_factory=dict)
    reference: str = "dense"
    out_dir: str = "runs/compare"
    #: named override lists, e.g. ``gpu`` (``mot compare --variant gpu``)
    variants: Dict[str, List[str]] = field(default_factory=dict)
    #: exponential-moving-average factor applied to training losses before step matching
    smoothing: float = 0.8
    #: whether every architecture must cost the reference's FLOPs per token (within its routers)
    flops_matched: bool = True
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    eval: EvalSchedule = field(default_factory=EvalSchedule)
    #: train each architecture once per seed and report over them (empty: the recipe's seed only)
    seeds: List[int] = field(default_factory=list)
    #: the same comparison at several points along one axis (size, batch, length); none: one comparison
    series: SeriesConfig = field(default_factory=SeriesConfig)

    def __post_init__(self) -> None:
        if not self.architectures:
            raise ConfigError("architectures: name at least one architecture")
        if self.reference not in self.architectures:
            raise ConfigError(f"reference={self.reference!r}: not one of the architectures "
                              f"{sorted(self.architectures)}")
        for label in self.architectures:
            if not label or "/" in label:
                raise ConfigError(f"architectures: {label!r} is not a valid directory name")
        check_number("smoothing", self.smoothing, "must be in [0, 1)", lambda v: 0 <= v < 1)
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ConfigError(f"seeds: {seed!r} is not an integer >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: {self.seeds} repeats a seed")
        from ..generate.transfusion import ImageSampling, SamplingError

        try:  # the sampling settings fail here, before any training, not after it
            ImageSampling(self.samples.steps, self.samples.method, self.samples.cfg_scale, seed=self.samples.seed)
        except SamplingError as error:
            raise ConfigError(f"samples: {error}") from None
        for name in ("per_prompt", "captions", "scored", "scorer_scenes"):
            value = getattr(self.samples, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"samples.{name}={value!r}: must be an integer >= 0")
        for name in ("every", "samples", "pairs", "denoising_steps"):
            value = getattr(self.eval, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "every" else 1):
                raise ConfigError(f"eval.{name}={value!r}: must be an integer >= {0 if name == 'every' else 1}")

    @property
    def directory(self) -> Path:
        return Path(self.out_dir) / self.name


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read an experiment config with ``key=value`` overrides (unknown keys are errors)."""
    return load_config(ExperimentConfig, path, overrides)


#: in an override, the runs folder of the seed being trained: ``runs`` for the recipe's own seed,
#: ``runs/seed-<seed>`` for the others. A warm start names its source with it
#: (``init.source=runs/compare/chameleon/{runs}/dense``) so that seed s continues seed s's source
#: run, not one source for every seed: the seeds then vary everything the source's did.
SEED_RUNS = "{runs}"


def _seeded(override: str, runs_of_seed: str) -> str:
    return override.replace(SEED_RUNS, runs_of_seed)


def seeded_recipes(experiment: ExperimentConfig, variant: Optional[str] = None) -> Dict[int, Dict[str, TrainConfig]]:
    """:func:`architecture_recipes` for every seed of ``experiment.seeds`` (the recipe's own seed
    first, in the plain run directories), or for the recipe's seed alone."""
    plain = architecture_recipes(experiment, variant)
    own = next(iter(plain.values())).seed
    seeded = {own: plain}
    for seed in experiment.seeds:
        if seed != own:
            seeded[seed] = architecture_recipes(experiment, variant, seed)
    return seeded


def architecture_recipes(experiment: ExperimentConfig, variant: Optional[str] = None,
                         seed: Optional[int] = None) -> Dict[str, TrainConfig]:
    """The recipe of every architecture: the shared recipe, the experiment's overrides, the
    variant's, then the architecture's own, with the run directory placed under the experiment
    (with ``seed``: that seed, in ``runs/seed-<seed>``). An architecture's overrides that change a
    shared field (data, schedule, seed) are an error. ``{runs}`` in an override is this seed's runs
    folder (see :data:`SEED_RUNS`)."""
    shared = list(experiment.overrides)
    if variant is not None:
        if variant not in experiment.variants:
            raise ConfigError(f"--variant {variant}: the experiment has variants {sorted(experiment.variants)}")
        shared += experiment.variants[variant]
    runs_of_seed = "runs" if seed is None else f"runs/seed-{seed}"
    shared = [_seeded(o, runs_of_seed) for o in shared]
    runs = experiment.directory / "runs"
    if seed is not None:
        shared.append(f"seed={seed}")
        runs = runs / f"seed-{seed}"
    placement = [f"out_dir={runs}"]
    if experiment.eval.every:  # the checkpoints the metrics over training are measured on
        placement.append(f"keep_every={experiment.eval.every}")
    base = load_recipe(experiment.recipe, shared + placement)
    recipes = {}
    for label, own in experiment.architectures.items():
        own = [_seeded(o, runs_of_seed) for o in own]
        recipe = load_recipe(experiment.recipe, shared + own + placement + [f"name={label}"])
        for name in SHARED_FIELDS:
            if getattr(recipe, name) != getattr(base, name):
                raise ConfigError(f"architectures.{label} changes {name}; an experiment compares architectures "
                                  f"under identical data, schedule and seed")
        _check_sampling_method(experiment.samples, label, recipe)
        recipes[label] = recipe
    return recipes


def _check_sampling_method(samples: SamplesConfig, label: str, recipe: TrainConfig) -> None:
    """A sampling method that cannot sample an architecture's objective fails before any training."""
    if recipe.data.setting != "transfusion" or samples.method is None:
        return
    from ..objectives.schedulers import sampling_method

    try:
        sampling_method(recipe.diffusion.objective, samples.method)
    except ValueError as error:
        raise ConfigError(f"samples.method for architectures.{label}: {error}") from None
