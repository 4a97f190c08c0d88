"""Copying towers between architectures: the weights of a warm start, as pure functions of state dicts.

A model's per-tower weights are named ``<prefix>.towers.<group>.<rest>``
(``blocks.2.ffn.towers.image.up.weight``): one group per tower where the component is untied, the
single ``shared`` group where it is tied, and a dense model's one tower. :func:`warm_state` fills
each target tower from the source tower it is given (:func:`tower_sources`), reading the source's
only group where the source ties that component, so a dense model fills every tower of a MoT (the
paper's towers start equal) and a MoT fills a MoT with a new modality's tower copied from a named
one. The embedding and the output head are per token: their rows are matched token by token
(specials by name, modality tokens by modality and local id); a row the source lacks (a new
modality's codes, or mot's specials on a Llama) starts as the mean of the source's rows, so a new
token starts as an average one rather than as noise of another scale. Everything else (the
continuous image path) is copied when the source has it, else keeps its fresh initialisation.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from ..config import ConfigError, ModelConfig

#: the value of ``init.towers.<tower>`` that keeps a tower's fresh initialisation
FRESH = "fresh"
#: the fields two models must agree on for weights of one to mean the same in the other
MATCHING_FIELDS = ("d_model", "n_layers", "n_heads", "kv_heads", "ffn_dim", "norm_type", "norm_placement",
                   "qk_norm", "rope_theta", "norm_eps")
#: parameters with one row per token id
ROW_PARAMETERS = ("embed", "head")


def check_architectures_match(target: ModelConfig, source: ModelConfig, source_name: str) -> None:
    """Raise :class:`ConfigError` naming every field on which ``target`` and ``source`` disagree."""
    differ = [f"model.{name}={getattr(target, name)!r} but {source_name} has {getattr(source, name)!r}"
              for name in MATCHING_FIELDS if getattr(target, name) != getattr(source, name)]
    if differ:
        raise ConfigError("the source's weights do not fit this model: " + "; ".join(differ))


def tower_sources(target_towers: Sequence[str], source_towers: Sequence[str],
                  chosen: Mapping[str, str]) -> Dict[str, Optional[str]]:
    """Each target tower -> the source tower it copies (``None``: fresh). ``chosen`` (``init.towers``)
    wins; else the source tower of the same name; else the source's only tower."""
    sources: Dict[str, Optional[str]] = {}
    for tower in target_towers:
        source = chosen.get(tower, tower if tower in source_towers else None)
        if tower not in chosen and source is None and len(source_towers) == 1:
            source = source_towers[0]
        if source is None:
            raise ConfigError(f"tower {tower!r}: the source has no tower of that name (its towers: "
                              f"{list(source_towers)}); name one in init.towers.{tower}, or {FRESH!r}")
        if source != FRESH and source not in source_towers:
            raise ConfigError(f"init.towers.{tower}={source!r}: the source has no tower {source!r}; its towers are "
                              f"{list(source_towers)} (or {FRESH!r} for a fresh tower)")
        sources[tower] = None if source == FRESH else source
    return sources


def target_rows(translation: torch.Tensor, target_vocab: int) -> torch.Tensor:
    """``[target_vocab]`` int64: the source row of each target id, -1 for a new one, from the
    ``[source_vocab]`` translation (source id -> target id, -1: not in the target)."""
    rows = torch.full((target_vocab,), -1, dtype=torch.int64)
    kept = translation >= 0
    rows[translation[kept]] = torch.nonzero(kept).flatten()
    return rows


def warm_state(target: torch.nn.Module, source_config: ModelConfig, source_state: Mapping[str, torch.Tensor],
               rows: torch.Tensor, chosen: Mapping[str, str]) -> Dict[str, torch.Tensor]:
    """``target``'s state dict with the source's weights copied in (see the module docstring).

    ``rows`` is :func:`target_rows`; ``chosen`` is ``init.towers``. A weight the source lacks or
    holds in another shape is a :class:`ConfigError` naming it."""
    config: ModelConfig = target.config
    check_architectures_match(config, source_config, "the source")
    sources = tower_sources(config.tower_names, source_config.tower_names, chosen)
    groups = _by_prefix(source_state)
    state = {name: tensor.detach().clone() for name, tensor in target.state_dict().items()}
    for name in state:
        split = _split(name)
        if split is None:
            if name.split(".")[0] in ROW_PARAMETERS:
                state[name] = _rows(source_state[name], rows)
            elif name in source_state:
                state[name] = _fitting(name, source_state[name], state[name])
            continue
        prefix, group, rest = split
        tower = group if group in sources else config.tower_names[0]  # a tied component: the first tower's
        if sources[tower] is None:
            continue
        tensor = _source_tensor(groups, prefix, sources[tower], rest, name)
        state[name] = _fitting(name, _rows(tensor, rows) if prefix in ROW_PARAMETERS else tensor, state[name])
    return state


def _split(name: str) -> Optional[Tuple[str, Optional[str], str]]:
    """``(prefix, group, rest)`` of a per-tower weight; a shared head counts as one group (``None``)."""
    parts = name.split(".")
    if "towers" in parts:
        at = parts.index("towers")
        return ".".join(parts[:at]), parts[at + 1], ".".join(parts[at + 2:])
    if parts[0] == "head":
        return "head", None, ".".join(parts[1:])
    return None


def _by_prefix(state: Mapping[str, torch.Tensor]) -> Dict[str, Dict[Optional[str], Dict[str, torch.Tensor]]]:
    """The source's per-tower weights: prefix -> group -> rest -> tensor."""
    grouped: Dict[str, Dict[Optional[str], Dict[str, torch.Tensor]]] = {}
    for name, tensor in state.items():
        split = _split(name)
        if split is not None:
            prefix, group, rest = split
            grouped.setdefault(prefix, {}).setdefault(group, {})[rest] = tensor
    return grouped


def _source_tensor(groups, prefix: str, tower: str, rest: str, name: str) -> torch.Tensor:
    """The source's weight for ``name``: its group ``tower`` at ``prefix``, or its only group there."""
    at_prefix = groups.get(prefix)
    if not at_prefix:
        raise ConfigError(f"{name}: the source has no weights under {prefix!r}")
    group = next(iter(at_prefix)) if len(at_prefix) == 1 else tower
    if rest not in at_prefix.get(group, {}):
        where = prefix if group is None else f"{prefix}.towers.{group}"
        raise ConfigError(f"{name}: the source has no {where}.{rest}; the towers differ in kind (an MoE FFN "
                          f"copies only from an MoE FFN with as many experts)")
    return at_prefix[group][rest]


def _rows(source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``source``'s rows in target order; a new row (-1) is the mean of the source's rows."""
    mean = source.float().mean(0, keepdim=True).to(source.dtype)
    table = torch.cat([source, mean])  # index -1 reads the mean
    return table[torch.where(rows >= 0, rows, source.shape[0])]


def _fitting(name: str, tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if tuple(tensor.shape) != tuple(like.shape):
        raise ConfigError(f"{name}: the source's weight is {tuple(tensor.shape)}, this model's is {tuple(like.shape)}")
    return tensor.detach().to(like.dtype).clone()

