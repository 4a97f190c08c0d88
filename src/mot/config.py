"""Typed configuration: dataclasses, YAML files and ``key=value`` overrides, strict validation.

This module imports no torch, so configs can be read, checked and printed anywhere.

A model is described by one :class:`ModelConfig`. Every architecture of the paper is a value of it:

* **MoT** (the default): one tower per modality, every component untied.
* **dense**: every modality mapped to one tower (``towers: {text: shared, image: shared}``).
* **leave-one-out**: two modalities share a tower (``towers: {text: ts, speech: ts, image: image}``).
* **ablations**: ``untied`` lists the components that get per-tower weights; the others are shared.
* **MoE-4x**: dense with ``moe.towers: [shared]``; **MoT + text MoE-4x**: ``moe.towers: [text]``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Type, TypeVar

import yaml

from .errors import MotError, first_line
from .io import YamlError, read_yaml

#: Components whose weights can be untied per tower (the paper, section 2).
COMPONENTS = ("ffn", "attention", "norms")
#: Untied only when asked (not by the paper): ``head``, one output head per tower, so that the
#: logits of a tower's positions depend on its weights alone (what freezing a tower needs; LMFusion
#: keeps a head per modality). The paper's MoT shares the head like the embedding.
OPTIONAL_COMPONENTS = ("head",)
#: Group name used for a component whose weights are shared by all towers.
SHARED = "shared"
NORM_TYPES = ("rmsnorm", "layernorm")
NORM_PLACEMENTS = ("post", "pre")
ATTENTION_BACKENDS = ("sdpa", "flex", "reference")
MOE_ROUTINGS = ("expert_choice", "token_choice")
LATENT_ENCODERS = ("linear", "unet")


class ConfigError(MotError, ValueError):
    """A configuration value is invalid; the message names the field and the value."""


@dataclass
class MoEConfig:
    """Mixture-of-Experts settings for the FFN of the towers listed in ``towers``.

    ``expert_choice`` (the paper's baseline, section 3.2.1): each expert takes its
    ``ceil(tokens * capacity_factor / num_experts)`` highest-scoring tokens. It balances load
    perfectly but looks at the whole batch, future tokens included, so it is not causal.
    ``token_choice``: each token goes to its top-1 expert; causal, usable for generation.
    """

    num_experts: int = 4
    routing: str = "expert_choice"
    capacity_factor: float = 1.0
    towers: List[str] = field(default_factory=list)


@dataclass
class LatentConfig:
    """The continuous path of one modality (the Transfusion setting's images), off when ``modality``
    is empty.

    An image is a ``[channels, H, W]`` VAE latent cut into ``patch_size x patch_size`` patches, one
    sequence position each (the paper: 2x2). A patch encoder maps the noisy latent into the model
    width and a patch decoder maps the final hidden states back to a noise prediction; both belong
    to no tower: the paper keeps them fixed across dense and MoT (section 3.4). ``linear`` is one
    matrix each way; ``unet`` is the paper's choice, down and up blocks with timestep conditioning,
    one downsampling per factor of 2 in ``patch_size``, with skip connections around the
    transformer. A timestep embedding is added to every patch position.
    """

    #: the continuous modality (``image``); empty: no continuous input
    modality: str = ""
    #: latent channels of the VAE
    channels: int = 4
    #: a power of 2: latent pixels per patch side
    patch_size: int = 2
    #: linear or unet
    encoder: str = "unet"
    #: U-Net widths: one at the latent resolution, then one per 2x downsampling (log2(patch_size) + 1)
    unet_channels: List[int] = field(default_factory=lambda: [64, 128])
    #: residual blocks per U-Net level (encoder and decoder each)
    unet_res_blocks: int = 1
    #: U-Net skip connections from each encoder level to the decoder (the paper's U-Net). They carry
    #: the noisy latent around the transformer; without them everything the decoder knows has passed
    #: through it (docs/transfusion.md measures both on the tiny recipe)
    unet_skips: bool = True
    #: width of the sinusoidal timestep features before the embedding MLP
    timestep_features: int = 256

    @property
    def enabled(self) -> bool:
        return bool(self.modality)


@dataclass
class ModelConfig:
    """The architecture of one MoT-family model. See the module docstring for the variants."""

    vocab_size: int = 65536
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    #: Key/value heads for grouped-query attention; ``None`` means ``n_heads``.
    n_kv_heads: Optional[int] = None
    #: SwiGLU hidden width; ``None`` means Llama's rule (8/3 of d_model, rounded up to 256).
    ffn_hidden: Optional[int] = None
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    norm_type: str = "rmsnorm"
    norm_eps: float = 1e-5
    #: ``post``: the paper's eq. 1-2, ``h = x + Norm(Attn(x))``; ``pre``: ``h = x + Attn(Norm(x))``.
    norm_placement: str = "post"
    #: Per-head normalisation of queries and keys (Chameleon's QK-norm).
    qk_norm: bool = True
    #: Ordered modality names; a token's modality id is its index in this list.
    modalities: List[str] = field(default_factory=lambda: ["text", "image"])
    #: modality -> tower name. Empty means one tower per modality, named after it.
    towers: Dict[str, str] = field(default_factory=dict)
    #: Components with per-tower weights (a subset of ``COMPONENTS``); the rest are shared.
    untied: List[str] = field(default_factory=lambda: list(COMPONENTS))
    moe: MoEConfig = field(default_factory=MoEConfig)
    #: the continuous (Transfusion) image path; off by default
    latent: LatentConfig = field(default_factory=LatentConfig)
    attention_backend: str = "sdpa"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):  # convenience for Python callers: moe={"towers": ["text"]}
            self.moe = MoEConfig(**self.moe)
        if isinstance(self.latent, dict):
            self.latent = LatentConfig(**self.latent)
        validate_model_config(self)

    # ---- derived values (kept out of the stored fields so overrides never leave them stale) ----

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return 256 * math.ceil(int(8 * self.d_model / 3) / 256)

    @property
    def tower_of_modality(self) -> Dict[str, str]:
        return dict(self.towers) if self.towers else {m: m for m in self.modalities}

    @property
    def tower_names(self) -> List[str]:
        """Tower names in the order of their first modality."""
        names: List[str] = []
        for modality in self.modalities:
            tower = self.tower_of_modality[modality]
            if tower not in names:
                names.append(tower)
        return names

    @property
    def modality_tower_index(self) -> List[int]:
        """For each modality id, the index of its tower in ``tower_names``."""
        names = self.tower_names
        return [names.index(self.tower_of_modality[m]) for m in self.modalities]

    def groups(self, component: str) -> List[str]:
        """The weight groups of a component: one per tower if untied, else the single shared one."""
        if component not in COMPONENTS + OPTIONAL_COMPONENTS:
            raise ConfigError(f"unknown component {component!r}; expected one of {COMPONENTS + OPTIONAL_COMPONENTS}")
        if component in self.untied and len(self.tower_names) > 1:
            return self.tower_names
        return [SHARED] if len(self.tower_names) > 1 else self.tower_names

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _fail(field_name: str, value: Any, why: str) -> None:
    raise ConfigError(f"{field_name}={value!r}: {why}")


def is_finite_number(value: Any) -> bool:
    """An int or a finite float; not a bool (YAML's ``true`` is no number)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def check_number(field_name: str, value: Any, why: str, in_range: Callable[[float], bool] = lambda _: True,
                 error: Type[ConfigError] = ConfigError) -> None:
    """Raise ``error`` naming ``field_name`` unless ``value`` is a finite number within ``in_range``.

    Every float field of every config goes through here, because a range check alone is not
    enough: ``nan`` fails every comparison (so ``value <= 0`` lets it through) and ``inf`` passes
    ``value > 0``. ``why`` says what is required ("must be a positive number").
    """
    if not is_finite_number(value):
        suffix = " (nan and infinities are refused)" if isinstance(value, float) and "finite" not in why else ""
        raise error(f"{field_name}={value!r}: {why}{suffix}")
    if not in_range(value):
        raise error(f"{field_name}={value!r}: {why}")


def _check_positive(config: Any, prefix: str, names: Sequence[str]) -> None:
    for name in names:
        check_number(prefix + name, getattr(config, name), "must be a positive number", lambda v: v > 0)


def _check_choice(field_name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        _fail(field_name, value, f"must be one of {list(choices)}")


def validate_model_config(c: ModelConfig) -> None:
    """Raise :class:`ConfigError` naming the first field that makes ``c`` impossible."""
    _check_positive(c, "", ["vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len",
                            "rope_theta", "norm_eps", "init_std"])
    if c.n_kv_heads is not None:
        _check_positive(c, "", ["n_kv_heads"])
    if c.ffn_hidden is not None:
        _check_positive(c, "", ["ffn_hidden"])
    if c.d_model % c.n_heads:
        _fail("d_model", c.d_model, f"must be divisible by n_heads={c.n_heads}")
    if c.head_dim % 2:
        _fail("n_heads", c.n_heads, f"gives head_dim={c.head_dim}; rotary embeddings need an even head_dim")
    if c.n_heads % c.kv_heads:
        _fail("n_kv_heads", c.n_kv_heads, f"must divide n_heads={c.n_heads}")
    _check_choice("norm_type", c.norm_type, NORM_TYPES)
    _check_choice("norm_placement", c.norm_placement, NORM_PLACEMENTS)
    _check_choice("attention_backend", c.attention_backend, ATTENTION_BACKENDS)

    if not c.modalities:
        _fail("modalities", c.modalities, "must name at least one modality")
    for modality in c.modalities:
        if not isinstance(modality, str) or not modality.isidentifier():
            _fail("modalities", c.modalities, f"{modality!r} is not a valid name (letters, digits, _)")
    if len(set(c.modalities)) != len(c.modalities):
        _fail("modalities", c.modalities, "names a modality twice")
    if c.towers:
        for modality in c.modalities:
            if modality not in c.towers:
                _fail("towers", c.towers, f"modality {modality!r} has no tower")
        for modality, tower in c.towers.items():
            if modality not in c.modalities:
                _fail(f"towers.{modality}", tower, f"{modality!r} is not in modalities {c.modalities}")
            if not isinstance(tower, str) or not tower.isidentifier():
                _fail(f"towers.{modality}", tower, "a tower name must be a valid identifier")
        if SHARED in c.towers.values() and len(set(c.towers.values())) > 1:
            _fail("towers", c.towers, f"{SHARED!r} is reserved for the single tower of a dense model")
    for component in c.untied:
        _check_choice("untied", component, COMPONENTS + OPTIONAL_COMPONENTS)
    if len(set(c.untied)) != len(c.untied):
        _fail("untied", c.untied, "names a component twice")

    _check_positive(c.moe, "moe.", ["num_experts", "capacity_factor"])
    _check_choice("moe.routing", c.moe.routing, MOE_ROUTINGS)
    ffn_groups = c.groups("ffn")
    for tower in c.moe.towers:
        if tower not in ffn_groups:
            _fail("moe.towers", c.moe.towers, f"{tower!r} is not an FFN group; the FFN groups are {ffn_groups}")
    if c.latent.enabled:
        _validate_latent(c.latent, c.modalities)


def _validate_latent(latent: LatentConfig, modalities: Sequence[str]) -> None:
    if latent.modality not in modalities[1:]:
        _fail("latent.modality", latent.modality,
              f"must be one of the non-text modalities {list(modalities[1:])} (or empty for none)")
    _check_positive(latent, "latent.", ["channels", "patch_size", "unet_res_blocks", "timestep_features"])
    if latent.patch_size & (latent.patch_size - 1):
        _fail("latent.patch_size", latent.patch_size, "must be a power of 2")
    if latent.timestep_features % 2:
        _fail("latent.timestep_features", latent.timestep_features, "must be even (sine and cosine halves)")
    _check_choice("latent.encoder", latent.encoder, LATENT_ENCODERS)
    if latent.encoder == "unet":
        levels = latent.patch_size.bit_length()  # log2(patch_size) + 1
        if len(latent.unet_channels) != levels:
            _fail("latent.unet_channels", latent.unet_channels,
                  f"needs {levels} widths for patch_size={latent.patch_size} (one per level)")
        for width in latent.unet_channels:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                _fail("latent.unet_channels", latent.unet_channels, "widths must be positive integers")


# ------------------------------------------------------------------------------------ files --

C = TypeVar("C")


def load_config(cls: Type[C], path: Optional[str | Path] = None, overrides: Sequence[str] = (),
                base: Optional[C] = None) -> C:
    """Build ``cls`` from ``base`` (or defaults), then a YAML file, then ``key=value`` overrides.

    Unknown keys, values of the wrong type and invalid combinations raise :class:`ConfigError`.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    # Besides OmegaConf's and YAML's own: TypeError, OmegaConf's merge of a list into a mapping
    # (``towers=[1, 2]``); ValueError, YAML's integer of 5,000 digits; RecursionError, lists
    # nested thousands deep; LookupError, OmegaConf's parse of the key ``[``. Errors of mot
    # (validation, the file's reader) name the field already.
    invalid = (OmegaConfBaseException, yaml.YAMLError, TypeError, ValueError, RecursionError, LookupError)
    merged = OmegaConf.structured(base if base is not None else cls)
    if path is not None:
        try:
            merged = _merge(merged, OmegaConf.create(_read_yaml(Path(path))))
        except MotError:
            raise
        except invalid as error:
            raise ConfigError(f"invalid config in {path}: {_first_line(error)}") from None
    for item in overrides:  # one at a time, so that an error names the override at fault
        shown = repr(item) if len(item) <= 80 else repr(item[:80]) + "..."
        if not item.partition("=")[0].strip() or "=" not in item:
            raise ConfigError(f"override {shown} is not of the form key=value")
        try:
            merged = _merge(merged, OmegaConf.from_dotlist([item]))
        except invalid as error:
            raise ConfigError(f"override {shown}: {_first_line(error)}") from None
    try:
        return OmegaConf.to_object(merged)  # runs __post_init__ validation
    except MotError:
        raise
    except invalid as error:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid config{where}: {_first_line(error)}") from None


def _merge(base, update):
    """OmegaConf merge, except that a plain mapping field (a tower map) given anew replaces the
    old one whole, at any depth: ``towers={text: a, image: a}`` over a preset, or
    ``model.towers=...`` over a recipe's preset, must not keep the preset's keys."""
    from omegaconf import OmegaConf

    _replace_mappings(base, update)
    return OmegaConf.merge(base, update)


def _replace_mappings(base, update) -> None:
    """Move each plain mapping field of ``update`` into ``base`` whole (both OmegaConf nodes)."""
    from omegaconf import DictConfig, OmegaConf

    for key in list(update.keys()):
        if key not in base or not isinstance(update[key], DictConfig):
            continue
        if OmegaConf.get_type(base, key) is dict:
            OmegaConf.update(base, key, update.pop(key), merge=False)
        elif isinstance(base[key], DictConfig):  # a nested config section: look inside it
            _replace_mappings(base[key], update[key])


def _read_yaml(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {str(path)!r} {what}")
    try:
        data = read_yaml(path)
    except YamlError as error:
        raise ConfigError(f"config file {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, not {type(data).__name__}")
    return data


def _first_line(error: Exception) -> str:
    """:func:`~mot.errors.first_line`, with the ``full_key:`` line of OmegaConf's messages, which
    names the field."""
    line = first_line(error)
    key = next((part.strip() for part in str(error).splitlines() if part.strip().startswith("full_key:")), "")
    return f"{line} ({key})" if key and key not in line else line


def save_config(config: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML that :func:`load_config` reads back to an equal object."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
