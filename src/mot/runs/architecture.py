"""What a recipe's ``architecture`` (dense, mot, moe4x, ...) does to its model: the towers, untied
components and MoE it sets for the corpus's modalities (:func:`architecture_settings`, applied by
:func:`mot.runs.resolve.resolve_model`), and the check that it replaces nothing the recipe gave
with another value (:func:`check_architecture_conflicts`)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Dict, List, Sequence, Set

from ..config import COMPONENTS, ConfigError, ModelConfig, MoEConfig
from ..presets import architecture_fields


def given_model_fields(data: dict, overrides: Sequence[str]) -> Set[str]:
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


def architecture_settings(architecture: str, modalities: Sequence[str]) -> Dict[str, Any]:
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
    return _flat(**architecture_settings(architecture, modalities))


def check_architecture_conflicts(architecture: str, model: ModelConfig, preset: str, given: Set[str]) -> None:
    """Refuse a ``given`` field (or, with a preset, any field of the preset's) that the architecture
    replaces with another value; equal values are fine."""
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
    if not preset:
        return  # the fields nobody gave are ModelConfig's defaults, which the architecture is there to set
    for name in sorted(set(current) - given):
        if current[name] != wanted[name]:
            raise ConfigError(f"architecture={architecture} replaces {name}={current[name]!r} of "
                              f"preset={preset} with {wanted[name]!r}; drop one of them")
