"""A comparison repeated over seeds (``seeds: [0, 1, 2]`` in an experiment): step matching as median
and range, and which architectures' final losses stay apart from the reference's in every seed.

A seed sets the model's initial weights and the data order (the trainer's ``seed``). One seed's
step-matching share is a single draw; the paper's claims are about the architectures, so a claim
holds here only where the seeds agree: an architecture's final losses over the seeds form a range,
and it is *apart* from the reference when the two ranges do not overlap. Beside it, the paired
test: each seed's final loss minus the reference's in that seed (same batches, same validation
draw), and whether that difference has one sign in every seed; ranges can overlap while every seed
puts the two architectures in the same order.
"""

from __future__ import annotations

import statistics
from typing import Dict, List, Optional

from ..eval.step_matching import share_text

NOT_REACHED = float("inf")  # a share that never reached the reference's final loss ranks last


def _ordered(value: Optional[float]) -> float:
    return NOT_REACHED if value is None else value


def share_spread(values: Dict[int, Optional[float]]) -> dict:
    """Median, lowest and highest of per-seed shares (``None``: not reached, above every share)."""
    ranked = sorted(_ordered(v) for v in values.values())
    median = statistics.median_low(ranked)  # a share that was reached (or not), never an average of two

    def back(value: float) -> Optional[float]:
        return None if value == NOT_REACHED else value

    return {"by_seed": {str(seed): value for seed, value in values.items()}, "median": back(median),
            "min": back(ranked[0]), "max": back(ranked[-1])}


def _final(points: List[list]) -> Optional[float]:
    return points[-1][1] if points else None


def final_losses(result: dict) -> Dict[str, Optional[float]]:
    """An architecture's last loss on every curve: ``train/<modality>`` (raw) and ``<split>/<modality>``."""
    finals = {f"train/{m}": _final(points) for m, points in result["train"].items()}
    finals.update({f"{split}/{m}": _final(points) for split, by in result["valid"].items() for m, points in by.items()})
    return finals


def seed_summary(matching_by_seed: Dict[int, Dict[str, dict]], results_by_seed: Dict[int, Dict[str, dict]],
                 reference: str) -> dict:
    """``{"seeds": [...], "step_matching": {label: {curve: spread}}, "seconds_matching": ...,
    "final_loss": {label: {curve: {"by_seed", "min", "max", "apart"}}}, "difference": ...}`` where a
    spread is the median and range of the per-seed shares, ``apart`` says whether the label's final
    losses and the reference's do not overlap (the reference itself: ``None``), and ``difference``
    is :func:`paired_differences`."""
    seeds = sorted(matching_by_seed)
    labels = list(dict.fromkeys(label for s in seeds for label in results_by_seed[s]))  # first seen, first listed
    step, seconds, finals = {}, {}, {}
    for label in labels:
        having = [s for s in seeds if label in results_by_seed[s]]  # a report mid-way may lack some seeds' runs
        if label != reference:
            curves = sorted({c for s in having for c in matching_by_seed[s].get(label, {})})
            step[label] = {c: share_spread({s: matching_by_seed[s][label].get(c, {}).get("fraction") for s in having})
                           for c in curves}
            seconds[label] = {c: share_spread({s: matching_by_seed[s][label].get(c, {}).get("seconds_fraction")
                                          for s in having}) for c in curves}
        per_seed = {s: final_losses(results_by_seed[s][label]) for s in having}
        finals[label] = {}
        for curve in sorted({c for f in per_seed.values() for c in f}):
            values = {str(s): per_seed[s].get(curve) for s in having}
            known = [v for v in values.values() if v is not None]
            finals[label][curve] = {"by_seed": values, "min": min(known) if known else None,
                                    "max": max(known) if known else None}
    for label, curves in finals.items():
        for curve, row in curves.items():
            ref = finals[reference].get(curve)
            row["apart"] = (None if label == reference or ref is None or row["min"] is None or ref["min"] is None
                            else row["max"] < ref["min"] or row["min"] > ref["max"])
    return {"seeds": seeds, "step_matching": step, "seconds_matching": seconds, "final_loss": finals,
            "difference": paired_differences(finals, reference)}


def paired_differences(finals: Dict[str, Dict[str, dict]], reference: str) -> Dict[str, Dict[str, dict]]:
    """``{label: {curve: {"by_seed", "min", "max", "same_sign"}}}``: each seed's final loss minus the
    reference's of the same seed, and whether it has one sign in every seed.

    Both runs of a seed saw the same batches, so their difference cancels what the seed did to both;
    a difference of one sign in every seed is the sharper test where ranges over the seeds overlap
    (one seed's hard validation batches raise every architecture's loss alike)."""
    out: Dict[str, Dict[str, dict]] = {}
    for label, curves in finals.items():
        if label == reference:
            continue
        out[label] = {}
        for curve, row in curves.items():
            ref = finals[reference].get(curve, {}).get("by_seed", {})
            diffs = {s: v - ref[s] for s, v in row["by_seed"].items() if v is not None and ref.get(s) is not None}
            if not diffs:
                continue
            values = list(diffs.values())
            out[label][curve] = {"by_seed": diffs, "min": min(values), "max": max(values),
                                 "same_sign": len(values) > 1 and (max(values) < 0 or min(values) > 0)}
    return out


def spread_text(spread: dict, seeds: int) -> str:
    """Median [lowest–highest]; with the number of seeds when fewer than the comparison's ``seeds``."""
    fewer = f" ({len(spread['by_seed'])} of {seeds} seeds)" if len(spread["by_seed"]) < seeds else ""
    if spread["min"] is None:
        return "not reached (any seed)" + fewer
    return f"{share_text(spread['median'])} [{share_text(spread['min'])}–{share_text(spread['max'])}]" + fewer


def seeds_markdown(summary: dict, reference: str, curves: List[str]) -> List[str]:
    """The report's "Seeds" section for the ``curves`` the report shows."""
    seeds, count = summary["seeds"], len(summary["seeds"])
    intro = ("Every architecture trained once per seed (initial weights and data order). Step matching as the "
             "median [lowest–highest] share of the reference's steps over the seeds; an architecture's final "
             f"loss is *apart* from `{reference}`'s when their ranges over the seeds do not overlap, and a "
             "claim holds only there.")
    lines = ["", f"## Over seeds {', '.join(str(s) for s in seeds)}", "", intro, ""]
    lines += _table(curves, summary["step_matching"], lambda spread: spread_text(spread, count))
    lines += ["", "Final losses, lowest–highest over the seeds (apart from the reference: ✓, overlapping: ~):", ""]
    lines += _table(curves, summary["final_loss"], _range_text)
    if summary["difference"]:  # empty when the reference is the only architecture
        lines += ["", f"Final loss minus `{reference}`'s in the same seed (seeds {', '.join(str(s) for s in seeds)}; "
                  "one sign in every seed: ✓):", ""]
        lines += _table(curves, summary["difference"], lambda row: _difference_text(row, seeds))
    return lines


def _table(curves: List[str], rows: Dict[str, Dict[str, dict]], cell) -> List[str]:
    """A markdown table: an architecture per row, a curve per column, ``cell`` of each entry ("-": none)."""
    lines = ["| architecture | " + " | ".join(curves) + " |", "|---|" + "---:|" * len(curves)]
    for label, by in rows.items():
        lines.append(f"| {label} | " + " | ".join(cell(by[c]) if by.get(c) else "-" for c in curves) + " |")
    return lines


def _range_text(row: dict) -> str:
    if row["min"] is None:
        return "-"
    mark = "" if row["apart"] is None else (" ✓" if row["apart"] else " ~")
    return f"{row['min']:.3f}–{row['max']:.3f}{mark}"


def _difference_text(row: dict, seeds: List[int]) -> str:
    values = " / ".join(f"{row['by_seed'][str(s)]:+.3f}" if str(s) in row["by_seed"] else "-" for s in seeds)
    return values + (" ✓" if row["same_sign"] else "")
