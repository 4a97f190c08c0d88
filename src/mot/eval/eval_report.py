"""``eval.md``: a run's ``eval.json`` as one table, a row per number and a column per checkpoint."""

from __future__ import annotations

import math
from typing import Dict, Iterator, List, Tuple

#: entries of a metric's numbers that are counts or breakdowns, not headline numbers
_DETAIL = {"by_source", "tokens", "documents", "nll_sum", "items", "excluded", "per_item", "samples", "examples",
           "generated", "real", "two_object_items", "too_long"}


def headline_numbers(metrics: dict) -> Dict[Tuple[str, str], float]:
    """``{(metric, "path/within/it"): value}`` of every headline number of one checkpoint's metrics."""
    found = {}
    for metric, numbers in metrics.items():
        for path, value in _flatten(numbers):
            found[(metric, path)] = value
    return found


def eval_markdown(run_name: str, record: dict) -> str:
    """The table of ``record`` (the ``eval.json`` format) with seconds per metric below it."""
    checkpoints = record["checkpoints"]
    steps = list(checkpoints)
    columns = {step: headline_numbers(entry["metrics"]) for step, entry in checkpoints.items()}
    rows: List[Tuple[str, str]] = []
    for numbers in columns.values():
        rows.extend(key for key in numbers if key not in rows)
    lines = [f"# Evaluation of {run_name}", "", "| metric | | " + " | ".join(f"step {s}" for s in steps) + " |",
             "|---|---|" + "---:|" * len(steps)]
    for metric, path in rows:
        cells = [_format(columns[step].get((metric, path))) for step in steps]
        lines.append(f"| {metric} | {path} | " + " | ".join(cells) + " |")
    lines += ["", "Seconds per metric (this machine):", "",
              "| metric | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---:|" * len(steps)]
    names = []
    for entry in checkpoints.values():
        names.extend(name for name in entry["seconds"] if name not in names)
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_format(checkpoints[s]["seconds"].get(name)) for s in steps) + " |")
    return "\n".join(lines) + "\n"


def _flatten(numbers, prefix: str = "") -> Iterator[Tuple[str, float]]:
    if isinstance(numbers, dict):
        for key, value in numbers.items():
            if key not in _DETAIL:
                yield from _flatten(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(numbers, (int, float)) and not isinstance(numbers, bool):
        yield prefix, float(numbers)


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.4g}"
