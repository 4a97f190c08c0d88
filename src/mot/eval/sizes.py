"""The sizes of models: every paper preset's parameters and FLOPs per token in one table, and one
model config's parameter and FLOP accounting as rows (``mot config list --sizes``, ``mot config
show --dry-run``). Counts are analytic and checked against the model built on the meta device."""

from __future__ import annotations

from typing import List, Optional, Tuple

from ..config import ConfigError, ModelConfig
from ..model.accounting import flops_per_token, format_number, verify_parameter_counts
from ..presets import get_preset, preset_info, preset_names

Rows = List[Tuple[str, str]]


def preset_table(context_length: Optional[int] = None) -> Tuple[List[str], List[List[str]]]:
    """Header and rows describing every paper preset (the tiny ones left out).

    FLOPs are per training token at ``context_length`` (default: each preset's ``max_seq_len``,
    4,096 for all)."""
    rows, lengths = [], set()
    for name in preset_names():
        info = preset_info(name)
        if info.setting == "tiny":
            continue
        config = get_preset(name)
        counts = verify_parameter_counts(config)
        length = context_length or config.max_seq_len
        lengths.add(length)
        towers = " · ".join(f"{group} {format_number(count)}"
                            for group, count in counts.non_embedding_per_group.items())
        rows.append([name, info.table, info.paper_size, format_number(counts.total),
                     format_number(counts.active), towers,
                     f"{flops_per_token(config, length).training / 1e9:,.2f}"])
    at = f"S={lengths.pop()}" if len(lengths) == 1 else "S=max_seq_len"
    header = ["preset", "table", "paper size", "total params", "active params",
              "non-embedding per tower", f"train GFLOP/token ({at})"]
    return header, rows


def _exact(value: float) -> str:
    return f"{value:,.0f}  ({format_number(value)})"


def accounting_rows(config: ModelConfig, context: Optional[int] = None) -> Tuple[Rows, Tuple[str, Rows], int]:
    """``(parameter rows, (FLOPs title, FLOPs rows), total parameters)`` of ``config`` at
    ``context`` tokens (default ``max_seq_len``); the model is built on the meta device (no
    memory) to check the analytic count."""
    length = context if context is not None else config.max_seq_len
    if length > config.max_seq_len:
        raise ConfigError(f"--context={length}: exceeds max_seq_len={config.max_seq_len}")
    counts = verify_parameter_counts(config)
    parameters = [("total", _exact(counts.total)),
                  ("embedding (token embedding + output head)", _exact(counts.embedding)),
                  ("non-embedding", _exact(counts.non_embedding))]
    parameters += [(f"  non-embedding: {group}", _exact(count)) for group, count in counts.non_embedding_per_group.items()]
    if counts.latent_path:
        parameters.append((f"{config.latent.modality} patch encoder/decoder + timestep embedding",
                           _exact(counts.latent_path)))
    parameters += [("active per token", _exact(counts.active)),
                   ("active non-embedding per token", _exact(counts.active_non_embedding))]
    flops = flops_per_token(config, length)
    rows = [("forward", _exact(flops.forward)), ("training (3 x forward)", _exact(flops.training)),
            ("  of which attention scores (forward)", _exact(flops.attention_forward))]
    if len(set(flops.forward_per_tower.values())) > 1:
        rows += [(f"  forward, a token of tower {tower}", _exact(forward))
                 for tower, forward in flops.forward_per_tower.items()]
    title = f"FLOPs per token at context {length} (2 x multiply-adds; norms ignored)"
    return parameters, (title, rows), counts.total
