"""A training recipe: the model, the data, the optimizer and the loop, in one typed config.

``mot train --config configs/recipes/<name>.yaml key=value ...`` reads it with
:func:`load_recipe`. A recipe may start from one of the paper's model presets (``preset:
chameleon-7b-mot``); its ``model`` section then overrides fields of the preset. YAML
interpolation ties fields together: ``optim.total_steps: ${steps}`` keeps the schedule's length
equal to the run's when ``steps`` is overridden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..config import ConfigError, ModelConfig, check_number, load_config
from ..io import YamlError, read_yaml
from ..objectives.schedulers import OBJECTIVES
from ..presets import get_preset
from .architecture import check_architecture_conflicts, given_model_fields
from .optim_config import OptimConfig

SETTINGS = ("chameleon", "chameleon_speech", "transfusion")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class DataConfig:
    """Which prepared corpus, which setting of it, and the batch shape."""

    #: a directory written by ``mot prepare``
    corpus: str = "data/tiny"
    #: chameleon, chameleon_speech or transfusion (see ``mot.data.settings``)
    setting: str = "chameleon"
    seq_len: int = 512
    #: rows of ``seq_len`` tokens per micro-batch on each rank
    batch_rows: int = 8
    #: micro-batches per optimizer step; the global batch is ``batch_rows x grad_accum x ranks`` rows
    grad_accum: int = 1
    #: source name -> mixing weight (default: every document equally likely; speech 1:6); 0 leaves it out
    weights: Dict[str, float] = field(default_factory=dict)
    #: splits evaluated every ``eval_every`` steps (``heldout``: the compositional ShapeScenes)
    valid_splits: List[str] = field(default_factory=lambda: ["valid"])
    #: batches per validation split (the same batches at every evaluation)
    valid_batches: int = 4
    #: tokenizer name -> fingerprint this recipe expects; empty accepts the corpus's tokenizers
    tokenizers: Dict[str, str] = field(default_factory=dict)


@dataclass
class DiffusionConfig:
    """The image objective of the Transfusion setting: ``loss = LM + loss_weight * diffusion``.

    ``objective`` is the noise process: ``ddpm`` (the paper: the ``schedule``'s betas, the model
    predicts the noise) or ``flow`` (rectified flow: straight paths from data to noise, the model
    predicts the velocity; :mod:`mot.objectives.flow_schedule`). The diffusion loss is the mean
    squared error of that prediction, averaged over each image's latent and then over images (per
    image, as the paper's appendix A.2 says), with a timestep drawn uniformly from ``train_steps``
    for every image. Captions that come before their image are
    dropped with probability ``caption_dropout`` so the model also learns unconditional generation
    (classifier-free guidance). An image followed by its caption gets a timestep of at most
    ``noise_cap_timestep`` in a ``noise_cap_fraction`` of cases, so captioning learns from nearly
    clean images (Transfusion caps at 500 of 1,000; the fraction is ours, see docs/transfusion.md).
    Validation noises each image at every timestep of ``valid_timesteps`` with noise fixed per image.
    """

    loss_weight: float = 5.0
    #: ddpm (noise prediction) or flow (rectified flow, velocity prediction)
    objective: str = "ddpm"
    train_steps: int = 1000
    #: cosine (Nichol & Dhariwal) or linear (ddpm only)
    schedule: str = "cosine"
    caption_dropout: float = 0.1
    noise_cap_fraction: float = 0.8
    noise_cap_timestep: int = 500
    valid_timesteps: List[int] = field(default_factory=lambda: [100, 300, 500, 700, 900])


@dataclass
class SpikeSkipConfig:
    """Skip the update of a step whose loss is more than ``factor`` times the mean of the last
    ``window`` accepted losses (logged; off by default)."""

    enabled: bool = False
    window: int = 50
    factor: float = 3.0


@dataclass
class InitConfig:
    """Where a run's weights start (when it starts at step 0; a resumed run reads its checkpoint).

    ``source`` is a mot run directory (its newest complete checkpoint, or the one of ``step``), a
    model directory written by ``mot export`` / ``save_pretrained``, or a Hugging Face Llama-family
    directory (``config.json`` + safetensors, read offline); empty: random initialisation. Each
    tower of the new model copies the source's tower named in ``towers`` (tower -> source tower, or
    ``fresh`` for random initialisation); a tower not named copies the source's tower of the same
    name, else the source's only tower (a dense model fills every tower: the paper's towers start
    equal). See :mod:`mot.runs.warm_start`.
    """

    source: str = ""
    step: Optional[int] = None
    towers: Dict[str, str] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Everything one training run needs. The run directory is ``out_dir/name``."""

    name: str = "run"
    out_dir: str = "runs"
    #: a paper preset (``mot config list``) the ``model`` section starts from; empty: ModelConfig defaults
    preset: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    #: dense, mot, moe4x, mot-text-moe4x, ffn, ffn-attn, all or loo-<modality>: sets the model's towers,
    #: untied components and MoE for the corpus's modalities (empty: the ``model`` section as written)
    architecture: str = ""
    #: take ``model.vocab_size`` and ``model.modalities`` from the corpus (off for the paper's
    #: recipes, whose vocabularies are the paper's)
    model_from_data: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    #: the image diffusion objective (used in the transfusion setting only)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 1000
    #: GPUs the recipe was written for (the paper's tables); used by ``--dry-run``'s estimates, while a
    #: real run uses however many ranks it is launched with. 0: not stated.
    gpus: int = 0
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    checkpoint_every: int = 100
    keep_last: int = 3
    #: also save a checkpoint at every multiple of this step, and never delete it (what ``mot eval``
    #: reads to follow metrics over training); 0: none
    keep_every: int = 0
    #: auto: bf16 autocast on a GPU, fp32 on a CPU
    precision: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    #: deterministic kernels (exact resume on CPU is bitwise in this mode)
    deterministic: bool = False
    #: auto, cpu, cuda
    device: str = "auto"
    spike_skip: SpikeSkipConfig = field(default_factory=SpikeSkipConfig)
    #: start from another model's weights (a warm start; see :class:`InitConfig`)
    init: InitConfig = field(default_factory=InitConfig)
    #: towers whose weights do not train (LMFusion: ``[text]``; see :mod:`mot.train.freezing`)
    freeze: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        validate_recipe(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def validate_recipe(c: TrainConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid field."""
    def positive(name: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r}: must be a positive integer")

    for name in ("steps", "log_every", "eval_every", "checkpoint_every", "keep_last"):
        positive(name, getattr(c, name))
    for name in ("seq_len", "batch_rows", "grad_accum", "valid_batches"):
        positive(f"data.{name}", getattr(c.data, name))
    _validate_diffusion(c.diffusion)
    positive("spike_skip.window", c.spike_skip.window)
    if isinstance(c.keep_every, bool) or not isinstance(c.keep_every, int) or c.keep_every < 0:
        raise ConfigError(f"keep_every={c.keep_every!r}: must be an integer >= 0")
    if isinstance(c.gpus, bool) or not isinstance(c.gpus, int) or c.gpus < 0:
        raise ConfigError(f"gpus={c.gpus!r}: must be an integer >= 0")
    if c.data.setting not in SETTINGS:
        raise ConfigError(f"data.setting={c.data.setting!r}: must be one of {list(SETTINGS)}")
    if c.precision not in PRECISIONS:
        raise ConfigError(f"precision={c.precision!r}: must be one of {list(PRECISIONS)}")
    if c.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={c.device!r}: must be auto, cpu or cuda")
    if c.data.seq_len > c.model.max_seq_len:
        raise ConfigError(f"data.seq_len={c.data.seq_len}: exceeds model.max_seq_len={c.model.max_seq_len}")
    check_number("spike_skip.factor", c.spike_skip.factor, "must be greater than 1", lambda v: v > 1)
    for source, weight in c.data.weights.items():  # the loader would refuse them only once training starts
        check_number(f"data.weights.{source}", weight, "must be a number >= 0 (0 leaves the source out)",
                     lambda v: v >= 0)
    if c.init.step is not None and (isinstance(c.init.step, bool) or not isinstance(c.init.step, int)
                                    or c.init.step < 0):
        raise ConfigError(f"init.step={c.init.step!r}: must be a step number >= 0 (or null: the newest)")
    if c.init.towers and not c.init.source:
        raise ConfigError(f"init.towers={c.init.towers!r} without init.source: name the model to copy towers from")
    if not c.name or "/" in c.name or c.name in (".", ".."):
        raise ConfigError(f"name={c.name!r}: must be a directory name without '/' (not empty, '.' or '..')")


def _validate_diffusion(d: DiffusionConfig) -> None:
    if isinstance(d.train_steps, bool) or not isinstance(d.train_steps, int) or d.train_steps < 2:
        raise ConfigError(f"diffusion.train_steps={d.train_steps!r}: must be an integer of at least 2")
    check_number("diffusion.loss_weight", d.loss_weight, "must be a number >= 0", lambda v: v >= 0)
    if d.objective not in OBJECTIVES:
        raise ConfigError(f"diffusion.objective={d.objective!r}: must be one of {', '.join(OBJECTIVES)}")
    if d.schedule not in ("cosine", "linear"):
        raise ConfigError(f"diffusion.schedule={d.schedule!r}: must be cosine or linear")
    for name in ("caption_dropout", "noise_cap_fraction"):
        check_number(f"diffusion.{name}", getattr(d, name), "must be a probability in [0, 1]", lambda v: 0 <= v <= 1)
    if not 0 <= d.noise_cap_timestep < d.train_steps:
        raise ConfigError(f"diffusion.noise_cap_timestep={d.noise_cap_timestep!r}: must be in [0, "
                          f"train_steps={d.train_steps})")
    if not d.valid_timesteps or any(not 0 <= t < d.train_steps for t in d.valid_timesteps):
        raise ConfigError(f"diffusion.valid_timesteps={d.valid_timesteps!r}: must be a non-empty list of "
                          f"timesteps in [0, train_steps={d.train_steps})")


def load_recipe(path: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a recipe (YAML) with ``key=value`` overrides. A ``preset`` (in the file or the
    overrides) is the base of the ``model`` section.

    An ``architecture`` sets the model's towers, untied components and MoE (:func:`~mot.runs.resolve.resolve_model`),
    so a value of those that the file, the overrides or the preset give, and that the architecture
    would replace with another, is an error naming both rather than a silent replacement."""
    data = _recipe_file(path)
    preset = _preset_named(data, overrides)
    base = TrainConfig(preset=preset, model=get_preset(preset)) if preset else None
    config = load_config(TrainConfig, path, overrides, base=base)
    if config.architecture:
        check_architecture_conflicts(config.architecture, config.model, config.preset,
                                     given_model_fields(data, overrides))
    return config


def _recipe_file(path: Optional[str | Path]) -> dict:
    """The recipe file's mapping as written (before the checks of :func:`load_config`)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = read_yaml(path) or {}
    except YamlError:
        return {}  # load_config reports the error with its location
    return data if isinstance(data, dict) else {}


def _preset_named(data: dict, overrides: Sequence[str]) -> str:
    preset = str(data.get("preset", "") or "")
    for item in overrides:
        if item.startswith("preset="):
            preset = item.split("=", 1)[1]
    return preset
