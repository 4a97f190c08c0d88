"""A training recipe: the model, the data, the optimizer and the loop, in one typed config.

``mot train --config configs/recipes/<name>.yaml key=value ...`` reads it with
:func:`load_recipe`. A recipe may start from one of the paper's model presets (``preset:
chameleon-7b-mot``); its ``model`` section then overrides fields of the preset. YAML
interpolation ties fields together: ``optim.total_steps: ${steps}`` keeps the schedule's length
equal to the run's when ``steps`` is overridden.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

from ..config import COMPONENTS, ConfigError, ModelConfig, MoEConfig, check_number, load_config
from ..io import YamlError, read_yaml
from ..presets import architecture_fields, get_preset
from .optim import OptimConfig

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
    #: source name -> mixing weight (default: every document equally likely; speech 1:6)
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

    The diffusion loss is the mean squared error of the predicted noise, averaged over each image's
    latent and then over images (per image, as the paper's appendix A.2 says), with a timestep drawn
    uniformly from ``train_steps`` for every image. Captions that come before their image are
    dropped with probability ``caption_dropout`` so the model also learns unconditional generation
    (classifier-free guidance). An image followed by its caption gets a timestep of at most
    ``noise_cap_timestep`` in a ``noise_cap_fraction`` of cases, so captioning learns from nearly
    clean images (Transfusion caps at 500 of 1,000; the fraction is ours, see docs/transfusion.md).
    Validation noises each image at every timestep of ``valid_timesteps`` with noise fixed per image.
    """

    loss_weight: float = 5.0
    train_steps: int = 1000
    #: cosine (Nichol & Dhariwal) or linear
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
    #: auto: bf16 autocast on a GPU, fp32 on a CPU
    precision: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    #: deterministic kernels (exact resume on CPU is bitwise in this mode)
    deterministic: bool = False
    #: auto, cpu, cuda
    device: str = "auto"
    spike_skip: SpikeSkipConfig = field(default_factory=SpikeSkipConfig)

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
        check_number(f"data.weights.{source}", weight, "must be a positive number", lambda v: v > 0)
    if not c.name or "/" in c.name or c.name in (".", ".."):
        raise ConfigError(f"name={c.name!r}: must be a directory name without '/' (not empty, '.' or '..')")


def _validate_diffusion(d: DiffusionConfig) -> None:
    if isinstance(d.train_steps, bool) or not isinstance(d.train_steps, int) or d.train_steps < 2:
        raise ConfigError(f"diffusion.train_steps={d.train_steps!r}: must be an integer of at least 2")
    check_number("diffusion.loss_weight", d.loss_weight, "must be a number >= 0", lambda v: v >= 0)
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

    An ``architecture`` sets the model's towers, untied components and MoE (:func:`resolve_model`),
    so a value of those that the file, the overrides or the preset give, and that the architecture
    would replace with another, is an error naming both rather than a silent replacement."""
    data = _recipe_file(path)
    preset = _preset_named(data, overrides)
    base = TrainConfig(preset=preset, model=get_preset(preset)) if preset else None
    config = load_config(TrainConfig, path, overrides, base=base)
    if config.architecture:
        _check_architecture_conflicts(config, _given_model_fields(data, overrides))
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


def _given_model_fields(data: dict, overrides: Sequence[str]) -> Set[str]:
    """Which of the fields an architecture sets (``towers``, ``untied``, ``moe.<field>``) the file's
    ``model`` section or the ``model.*`` overrides give."""
    from omegaconf import OmegaConf

    sections = [data.get("model")]
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key == "model" or key.startswith("model."):
            sections.append(OmegaConf.to_container(OmegaConf.from_dotlist([item]))["model"])
    given: Set[str] = set()
    for section in (s for s in sections if isinstance(s, dict)):
        given |= {name for name in ("towers", "untied") if name in section}
        if "moe" in section:
            moe = section["moe"]
            given |= {f"moe.{f.name}" for f in fields(MoEConfig) if not isinstance(moe, dict) or f.name in moe}
    return given


def _architecture_settings(architecture: str, modalities: Sequence[str]) -> Dict[str, Any]:
    """The model fields ``architecture`` sets for ``modalities``: all of towers, untied and moe."""
    return {"towers": {}, "untied": list(COMPONENTS), "moe": MoEConfig(),
            **architecture_fields(architecture, modalities)}


def _flat(towers: Dict[str, str], untied: List[str], moe: MoEConfig) -> Dict[str, Any]:
    """Those fields as compared: the towers map, then the untied components and each MoE field,
    lists sorted (their order means nothing)."""
    flat: Dict[str, Any] = {"towers": dict(towers), "untied": sorted(untied)}
    for f in fields(MoEConfig):
        value = getattr(moe, f.name)
        flat[f"moe.{f.name}"] = sorted(value) if isinstance(value, list) else value
    return flat


def _architecture_flat(architecture: str, modalities: Sequence[str]) -> Dict[str, Any]:
    # With model_from_data the corpus may bring the modality a loo-<modality> names later.
    alone = architecture[len("loo-"):] if architecture.startswith("loo-") else None
    if alone is not None and alone not in modalities:
        modalities = [*modalities, alone]
    return _flat(**_architecture_settings(architecture, modalities))


def _check_architecture_conflicts(config: TrainConfig, given: Set[str]) -> None:
    """Refuse a ``given`` field (or, with a preset, any field of the preset's) that the architecture
    replaces with another value; equal values are fine."""
    architecture, model = config.architecture, config.model
    current = _flat(model.towers, model.untied, model.moe)
    wanted = _architecture_flat(architecture, model.modalities)
    if "towers" in given and model.towers:  # a tower map is compared over the modalities it names
        named = [m for m in model.modalities if m in model.towers]
        named += [m for m in model.towers if m not in named]
        wanted["towers"] = _architecture_flat(architecture, named)["towers"]
    for name in sorted(given):
        if current[name] != wanted[name]:
            raise ConfigError(f"model.{name}={current[name]!r} is replaced by architecture={architecture} (which "
                              f"sets {name}={wanted[name]!r}); drop one of them")
    if not config.preset:
        return  # the fields nobody gave are ModelConfig's defaults, which the architecture is there to set
    for name in sorted(set(current) - given):
        if current[name] != wanted[name]:
            raise ConfigError(f"architecture={architecture} replaces {name}={current[name]!r} of "
                              f"preset={config.preset} with {wanted[name]!r}; drop one of them")


def resolve_model(config: TrainConfig, vocab_size: Optional[int] = None,
                  modalities: Optional[List[str]] = None, latent_channels: Optional[int] = None) -> TrainConfig:
    """The recipe with its final model: the vocabulary, modalities and (Transfusion) latent channels
    of the corpus (given, and ``model_from_data``), then the ``architecture`` applied to those
    modalities. Applying it again changes nothing. Towers named after modalities the corpus lacks
    are an error, and so is a continuous image path outside the transfusion setting or its absence
    inside it."""
    model = config.model
    transfusion = config.data.setting == "transfusion"
    if config.model_from_data and vocab_size is not None:
        extra = sorted(set(model.towers) - set(modalities))
        if extra and not config.architecture:
            raise ConfigError(f"model.towers names {extra}, which the {config.data.setting} corpus does not have "
                              f"(its modalities: {modalities})")
        latent = model.latent
        if transfusion:
            latent = replace(latent, modality=latent.modality or "image",
                             channels=latent_channels if latent_channels is not None else latent.channels)
        model = replace(model, vocab_size=vocab_size, modalities=list(modalities), latent=latent,
                        towers={m: t for m, t in model.towers.items() if m in modalities})
    if transfusion and not model.latent.enabled:
        raise ConfigError("data.setting=transfusion needs model.latent.modality=image (the continuous image path)")
    if not transfusion and model.latent.enabled:
        raise ConfigError(f"model.latent.modality={model.latent.modality!r}: the continuous path belongs to the "
                          f"transfusion setting, not {config.data.setting}")
    if config.architecture:
        model = replace(model, **_architecture_settings(config.architecture, model.modalities))
    return replace(config, model=model)
