"""The paper's model sizes as named presets: ``get_preset("chameleon-7b-mot")`` -> a :class:`ModelConfig`.

A name is ``<setting>-<size>-<architecture>``. Sizes come from the paper's tables (hidden size,
layers, heads; every paper model trains on 4,096-token sequences):

==================  =========  ==============================================  =================
setting             table      sizes                                           modalities
==================  =========  ==============================================  =================
chameleon           Table 1    37M, 94M, 443M, 1.5B, 7B                        text, image
chameleon-speech    Table 3    443M, 880M, 1.5B, 7B                            text, image, speech
transfusion         Table 4    163M, 760M, 1.4B, 7B                            text, image
ablation            Table 5    880M (Chameleon setting)                        text, image
==================  =========  ==============================================  =================

Vocabularies (the token embedding and output head are ``vocab x d_model`` each):

* Chameleon: 65,536 tokens, the size of Chameleon's unified vocabulary (text BPE and the 8,192
  image codes of its VQ tokenizer in one table).
* Chameleon+Speech: 66,036 = 65,536 + the 500 speech units of the paper's DinoSR-style speech
  tokenizer (section 3.3.1), appended after the Chameleon vocabulary.
* Transfusion: 32,000, the Llama-2 text tokenizer. Images are continuous VAE latents (8 channels,
  8x downsampling: section 3.4) in 2x2 patches that enter through a U-Net patch encoder and leave
  through its decoder, not through this vocabulary. The paper keeps the U-Net at 0.27B parameters
  for every size; ours (widths 768 and 1536, two residual blocks per level) has 0.28B at d=768
  and grows to 0.33B at d=4,096 through the projections into and out of the model width.

The FFN width is left to Llama's rule (``ModelConfig.ffn_dim``: 8/3 d rounded up to 256, 11,008
at d=4,096, as Llama-2-7B and Chameleon-7B). Architectures:

* ``dense``: every modality in one tower; ``mot``: one tower per modality, everything untied;
* ``moe4x``: dense with a 4-expert Expert-Choice MoE FFN, capacity factor 1 (section 3.2.1);
* ``mot-text-moe4x``: MoT whose text tower's FFN is that MoE (section 5; Chameleon and Transfusion);
* ``loo-<modality>`` (Chameleon+Speech 443M, section 4): that modality alone in its tower, the
  other two sharing one;
* ablations (Table 5, section 3.5): ``dense``, ``ffn`` (only the FFN untied), ``ffn-attn`` (FFN and
  attention projections), ``all`` (the full MoT).

Three ``tiny-*`` presets (d=128, 2 layers) run on a CPU in tests and examples.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .config import SHARED, ConfigError, LatentConfig, ModelConfig, MoEConfig, load_config

PAPER_SEQ_LEN = 4096
CHAMELEON_VOCAB = 65_536
SPEECH_UNITS = 500
LLAMA2_VOCAB = 32_000


@dataclass(frozen=True)
class PresetInfo:
    """Where a preset comes from in the paper."""

    name: str
    #: chameleon, chameleon-speech, transfusion, ablation or tiny
    setting: str
    #: the paper's table with the size ("Table 1"), or "-" for the tiny presets
    table: str
    #: the paper's size label ("7B"); for sparse models the paper labels activated parameters
    paper_size: str
    architecture: str


@dataclass(frozen=True)
class _Size:
    label: str
    d_model: int
    n_layers: int
    n_heads: int


@dataclass(frozen=True)
class _Setting:
    table: str
    vocab_size: int
    modalities: Tuple[str, ...]
    sizes: Tuple[_Size, ...]
    architectures: Tuple[str, ...]
    max_seq_len: int = PAPER_SEQ_LEN
    #: the continuous image path (Transfusion only)
    latent: Optional[LatentConfig] = None


_S443M = _Size("443M", 1024, 24, 16)
_S880M = _Size("880M", 1536, 24, 24)
_S1_5B = _Size("1.5B", 2048, 24, 16)
_S7B = _Size("7B", 4096, 32, 32)

_SETTINGS: Dict[str, _Setting] = {
    "chameleon": _Setting(
        "Table 1", CHAMELEON_VOCAB, ("text", "image"),
        (_Size("37M", 256, 4, 8), _Size("94M", 512, 8, 8), _S443M, _S1_5B, _S7B),
        ("dense", "mot", "moe4x", "mot-text-moe4x")),
    "chameleon-speech": _Setting(
        "Table 3", CHAMELEON_VOCAB + SPEECH_UNITS, ("text", "image", "speech"),
        (_S443M, _S880M, _S1_5B, _S7B), ("dense", "mot", "moe4x")),
    "transfusion": _Setting(
        "Table 4", LLAMA2_VOCAB, ("text", "image"),
        (_Size("163M", 768, 16, 12), _Size("760M", 1536, 24, 24), _Size("1.4B", 2048, 24, 16), _S7B),
        ("dense", "mot", "moe4x", "mot-text-moe4x"),
        latent=LatentConfig(modality="image", channels=8, patch_size=2, encoder="unet",
                            unet_channels=[768, 1536], unet_res_blocks=2)),
    "ablation": _Setting("Table 5", CHAMELEON_VOCAB, ("text", "image"), (_S880M,),
                         ("dense", "ffn", "ffn-attn", "all")),
}
#: Extra architectures that the paper runs at one size only: (setting, size label) -> names.
_EXTRA = {("chameleon-speech", "443M"): ("loo-text", "loo-image", "loo-speech")}
_TINY = _Setting("-", 1024, ("text", "image"), (_Size("-", 128, 2, 4),), ("dense", "mot", "moe4x"),
                 max_seq_len=512)


def _moe4x(towers: List[str]) -> MoEConfig:
    """The paper's MoE-4x: 4 experts, Expert-Choice routing, capacity factor 1 (section 3.2.1)."""
    return MoEConfig(num_experts=4, routing="expert_choice", capacity_factor=1.0, towers=towers)


#: Every architecture name a preset or a recipe's ``architecture`` may use.
ARCHITECTURES = ("dense", "mot", "moe4x", "mot-text-moe4x", "ffn", "ffn-attn", "all", "loo-<modality>")


def architecture_fields(architecture: str, modalities: Sequence[str]) -> Dict[str, Any]:
    """The ``ModelConfig`` fields that make ``architecture`` out of the default (MoT) config."""
    known = architecture in ARCHITECTURES or (architecture.startswith("loo-") and architecture[4:] in modalities)
    if not known:
        raise ConfigError(f"architecture={architecture!r}: must be one of "
                          f"{[a for a in ARCHITECTURES if not a.startswith('loo-')] + [f'loo-{m}' for m in modalities]}")
    everyone_shares = {modality: SHARED for modality in modalities}
    if architecture in ("mot", "all"):
        return {}
    if architecture == "dense":
        return {"towers": everyone_shares}
    if architecture == "moe4x":
        return {"towers": everyone_shares, "moe": _moe4x([SHARED])}
    if architecture == "mot-text-moe4x":
        return {"moe": _moe4x(["text"])}
    if architecture == "ffn":
        return {"untied": ["ffn"]}
    if architecture == "ffn-attn":
        # The paper unties Q, K, V (section 3.5); our attention component also unties O with them.
        return {"untied": ["ffn", "attention"]}
    if architecture.startswith("loo-"):
        alone = architecture[len("loo-"):]
        together = "_".join(m for m in modalities if m != alone)  # e.g. text_speech
        return {"towers": {m: m if m == alone else together for m in modalities}}
    raise AssertionError(f"unhandled architecture {architecture!r}")  # ARCHITECTURES names only known ones


def _registry() -> Dict[str, Tuple[PresetInfo, _Setting, _Size]]:
    presets: Dict[str, Tuple[PresetInfo, _Setting, _Size]] = {}
    for setting_name, setting in _SETTINGS.items():
        for size in setting.sizes:
            for architecture in setting.architectures + _EXTRA.get((setting_name, size.label), ()):
                name = f"{setting_name}-{size.label.lower()}-{architecture}"
                presets[name] = (PresetInfo(name, setting_name, setting.table, size.label, architecture),
                                 setting, size)
    for architecture in _TINY.architectures:
        name = f"tiny-{architecture}"
        presets[name] = (PresetInfo(name, "tiny", _TINY.table, "-", architecture), _TINY, _TINY.sizes[0])
    return presets


_PRESETS = _registry()


def preset_names() -> List[str]:
    """Every preset name, paper settings first (in table order), then the tiny ones."""
    return list(_PRESETS)


def preset_info(name: str) -> PresetInfo:
    """Where preset ``name`` comes from; unknown names raise :class:`ConfigError` with suggestions."""
    return _lookup(name)[0]


def get_preset(name: str) -> ModelConfig:
    """A fresh :class:`ModelConfig` for preset ``name``; unknown names raise :class:`ConfigError`."""
    info, setting, size = _lookup(name)
    return ModelConfig(vocab_size=setting.vocab_size, d_model=size.d_model, n_layers=size.n_layers,
                       n_heads=size.n_heads, max_seq_len=setting.max_seq_len,
                       modalities=list(setting.modalities),
                       latent=LatentConfig(**asdict(setting.latent)) if setting.latent else LatentConfig(),
                       **architecture_fields(info.architecture, setting.modalities))


def is_preset(name: str) -> bool:
    """Whether ``name`` is a preset name."""
    return name in _PRESETS


def _lookup(name: str) -> Tuple[PresetInfo, _Setting, _Size]:
    if name in _PRESETS:
        return _PRESETS[name]
    close = difflib.get_close_matches(name, list(_PRESETS), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"unknown preset {name!r}; {hint}`mot config list` shows all {len(_PRESETS)}")


def resolve_model_config(source: str, overrides: Sequence[str] = ()) -> ModelConfig:
    """A preset name or a model config YAML file, then ``key=value`` overrides, validated.

    An unknown preset name raises :class:`ConfigError` with the closest preset names."""
    looks_like_file = source.endswith((".yaml", ".yml")) or "/" in source or Path(source).is_file()
    if looks_like_file and not is_preset(source):
        return load_config(ModelConfig, source, overrides)
    return load_config(ModelConfig, None, overrides, base=get_preset(source))
