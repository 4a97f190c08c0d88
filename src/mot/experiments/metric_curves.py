"""Metrics over training in ``mot compare`` (``eval: {every: N, metrics: [...]}`` in an experiment):
each architecture's checkpoints at every multiple of ``N`` steps (kept by ``keep_every``) and its
last one measured by ``mot eval``, then per metric a curve per architecture, and step matching on
each metric as on the losses: the share of the reference's steps an architecture needs to reach
the reference's final value (the paper's Transfusion figures track FID, CLIP score and CIDEr so).

A checkpoint already measured with the same settings (its ``eval.json`` entry) is not measured
again, so an interrupted comparison resumes its evaluation too.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..eval.attribute_agreement import ATTRIBUTES
from ..eval.run_eval import EvalOptions, evaluate_run, read_results, run_metrics
from ..eval.step_matching import fraction_to_match_final, share_text
from ..io.figures import save_figure
from ..runs.checkpoints import CheckpointManager
from ..runs.recipe import TrainConfig
from .seeds import share_spread, spread_text

METRICS_PLOT = "metrics.png"
#: metrics for which more is better (the rest: less is better)
HIGHER_IS_BETTER = ("attributes", "cider", "bleu")


def eval_metrics(config: TrainConfig, names: List[str]) -> List[str]:
    """The metrics an architecture is followed by: ``names`` checked against its setting, or every
    one it supports but ``loss`` (which the trainer logs already)."""
    return run_metrics(config, names) if names else [m for m in run_metrics(config, None) if m != "loss"]


def eval_options(schedule, steps: List[int], metrics: List[str]) -> EvalOptions:
    """The ``mot eval`` options of an experiment's ``eval`` section for ``steps``."""
    return EvalOptions(checkpoint=",".join(map(str, steps)), splits=list(schedule.splits) or None, metrics=metrics,
                       pairs=schedule.pairs, samples=schedule.samples, seed=schedule.seed,
                       denoising_steps=schedule.denoising_steps)


def evaluate_over_training(recipes: Dict[str, TrainConfig], metrics: Dict[str, List[str]], schedule,
                           log: Callable[[str], None]) -> None:
    """Measure every architecture's kept checkpoints not measured yet."""
    for label, recipe in recipes.items():
        saved = CheckpointManager(recipe.run_dir / "checkpoints", recipe.keep_last, recipe.keep_every).steps()
        wanted = [s for s in saved if s % schedule.every == 0 or s == recipe.steps]
        recorded = read_results(recipe.run_dir)["checkpoints"]  # read once per run, not once per step
        todo = [s for s in wanted if not _measured(recorded.get(str(s)), schedule, metrics[label])]
        if todo:
            log(f"eval {label}: steps {todo} ({', '.join(metrics[label])})")
            evaluate_run(recipe.run_dir, eval_options(schedule, todo, metrics[label]), log=lambda _: None)


def evaluation_seconds(run_dirs: Dict[str, Path]) -> Dict[str, float]:
    """Seconds each architecture's recorded evaluations took (metrics only, as ``eval.json`` has them)."""
    return {label: sum(sum(entry["seconds"].values()) for entry in read_results(run_dir)["checkpoints"].values())
            for label, run_dir in run_dirs.items()}


def _measured(entry: Optional[dict], schedule, metrics: List[str]) -> bool:
    """Whether a checkpoint's ``eval.json`` entry has every metric, measured with these settings."""
    if entry is None:
        return False
    wanted = asdict(eval_options(schedule, [], metrics))
    ignored = ("checkpoint", "metrics")
    return all(name in entry["metrics"] and {k: v for k, v in entry["options"][name].items() if k not in ignored}
               == {k: v for k, v in wanted.items() if k not in ignored} for name in metrics)


def headline(metrics: dict) -> Dict[str, float]:
    """The numbers a comparison follows, by curve name (``"fid valid"``, ``"perplexity valid
    text_to_image"``, ``"attributes valid mean"``, ...), of one checkpoint's metrics."""
    found = {}
    for name, by_split in metrics.items():
        for split, numbers in by_split.items():
            if name == "loss":
                continue
            if name == "causal_loss":
                found.update({f"causal_loss {split} {m}": v for m, v in numbers.items()})
            elif name == "perplexity":
                found.update({f"perplexity {split} {d}": e["perplexity"] for d, e in numbers.items()})
            elif name == "attributes":
                # the mean over the attributes: graded where "all at once" is still 0 at small scale
                shares = [numbers[a] for a in ATTRIBUTES if a != "all" and numbers.get(a) is not None]
                found[f"attributes {split} mean"] = sum(shares) / len(shares) if shares else None
            elif name == "speech_units":
                found[f"speech_units {split} js"] = numbers["unit_js_distance"]
                found[f"speech_units {split} duration"] = numbers["duration_error_relative"]
            else:
                found[f"{name} {split}"] = numbers["value"]
    return found


def metric_curves(run_dirs: Dict[str, Path]) -> Dict[str, Dict[str, List[list]]]:
    """``{curve name: {label: [[step, value], ...]}}`` from each architecture's ``eval.json``."""
    curves: Dict[str, Dict[str, List[list]]] = {}
    for label, run_dir in run_dirs.items():
        for step, entry in read_results(run_dir)["checkpoints"].items():
            for name, value in headline(entry["metrics"]).items():
                if value is None or not math.isfinite(value):  # nothing was scored at that checkpoint
                    continue
                curves.setdefault(name, {}).setdefault(label, []).append([int(step), value])
    for by_label in curves.values():
        for points in by_label.values():
            points.sort()
    return curves


def metric_step_matching(curves: Dict[str, Dict[str, List[list]]], reference: str) -> Dict[str, Dict[str, Optional[float]]]:
    """``{curve: {label: share of the reference's steps to reach its final value}}`` (``None``:
    never reached); values where more is better are negated first."""
    matched: Dict[str, Dict[str, Optional[float]]] = {}
    for name, by_label in curves.items():
        if reference not in by_label:
            continue
        sign = -1.0 if name.split()[0] in HIGHER_IS_BETTER else 1.0
        ref_steps, ref_values = zip(*((s, sign * v) for s, v in by_label[reference]))
        matched[name] = {}
        for label, points in by_label.items():
            if label != reference:
                steps, values = zip(*((s, sign * v) for s, v in points))
                matched[name][label] = fraction_to_match_final(ref_steps, ref_values, steps, values)
    return matched


def metric_seed_summary(curves_by_seed: Dict[int, Dict[str, Dict[str, List[list]]]], reference: str) -> Optional[dict]:
    """The metrics over training of every seed measured, from each seed's :func:`metric_curves`:
    ``{"seeds": [...], "step_matching": {curve: {label: spread}}, "final": {curve: {label: {"by_seed",
    "min", "max"}}}}``, a spread the median and range of the per-seed shares
    (:func:`.seeds.share_spread`); ``None`` with fewer than two seeds measured. A seed's generation
    metrics are a draw as its losses are, so a share on a metric, too, holds only where the seeds agree."""
    curves_by_seed = {seed: curves for seed, curves in curves_by_seed.items() if curves}  # not measured (yet): out
    if len(curves_by_seed) < 2:
        return None
    matching = {seed: metric_step_matching(curves, reference) for seed, curves in curves_by_seed.items()}
    names = list(dict.fromkeys(name for curves in curves_by_seed.values() for name in curves))
    step: Dict[str, dict] = {}
    final: Dict[str, dict] = {}
    for name in names:
        labels = list(dict.fromkeys(label for curves in curves_by_seed.values() for label in curves.get(name, {})))
        step[name], final[name] = {}, {}
        for label in labels:
            values = {str(seed): curves[name][label][-1][1] for seed, curves in curves_by_seed.items()
                      if label in curves.get(name, {})}
            final[name][label] = {"by_seed": values, "min": min(values.values()), "max": max(values.values())}
            shares = {seed: matching[seed][name][label] for seed in curves_by_seed
                      if label in matching[seed].get(name, {})}
            if label != reference and shares:
                step[name][label] = share_spread(shares)
    return {"seeds": sorted(curves_by_seed), "step_matching": step, "final": final}


def metric_plot(curves: Dict[str, Dict[str, List[list]]], path: Path) -> Optional[Path]:
    """One panel per curve, a line per architecture."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(curves))
    rows = -(-len(curves) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    for axis in axes.flat[len(curves):]:
        axis.axis("off")
    for axis, (name, by_label) in zip(axes.flat, curves.items()):
        for label, points in by_label.items():
            axis.plot(*zip(*points), marker="o", markersize=3, label=label)
        better = "higher" if name.split()[0] in HIGHER_IS_BETTER else "lower"
        axis.set_title(f"{name} ({better} is better)", fontsize=8)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return save_figure(figure, path, dpi=100)


def metric_markdown(curves: Dict[str, Dict[str, List[list]]], matching: Dict[str, Dict[str, Optional[float]]],
                    reference: str, plot: Optional[str], seconds: Dict[str, float]) -> List[str]:
    """The report's section: final values, step matching per metric, the plot and the cost."""
    if not curves:
        return []
    labels = list(next(iter(curves.values())))
    lines = ["", "## Metrics over training", "",
             f"Each architecture's kept checkpoints measured by `mot eval`; step matching: the share of "
             f"`{reference}`'s steps needed to reach its final value (below 100%: faster).", "",
             "| metric | " + " | ".join(f"final {label}" for label in labels) + " | "
             + " | ".join(f"{label} steps" for label in labels if label != reference) + " |",
             "|---|" + "---:|" * (2 * len(labels) - 1)]
    for name, by_label in curves.items():
        finals = [f"{by_label[label][-1][1]:.4g}" if label in by_label else "-" for label in labels]
        shares = [share_text(matching.get(name, {}).get(label)) for label in labels if label != reference]
        lines.append(f"| {name} | " + " | ".join(finals + shares) + " |")
    if plot:
        lines += ["", f"![metrics over training]({plot})"]
    lines += ["", "Evaluation time (the metrics of every measured checkpoint, this machine): "
              + ", ".join(f"{label} {s / 60:.1f} min" for label, s in seconds.items()) + "."]
    return lines


def metric_seeds_markdown(summary: dict, reference: str) -> List[str]:
    """The report's section on the metrics over seeds: each seed's final value and the median
    [lowest–highest] share of the reference's steps."""
    seeds = summary["seeds"]
    labels = list(dict.fromkeys(label for by_label in summary["final"].values() for label in by_label))
    others = [label for label in labels if label != reference]
    order = " / ".join(map(str, seeds))
    lines = ["", f"## Metrics over training, over seeds {', '.join(map(str, seeds))}", "",
             f"Every seed's checkpoints measured alike. Final values seed by seed ({order}); step matching as "
             f"the median [lowest–highest] share of `{reference}`'s steps over the seeds.", "",
             "| metric | " + " | ".join(f"final {label}" for label in labels) + " | "
             + " | ".join(f"{label} steps" for label in others) + " |",
             "|---|" + "---:|" * (len(labels) + len(others))]
    for name, by_label in summary["final"].items():
        finals = [" / ".join(f"{by_label[label]['by_seed'][str(s)]:.4g}" if str(s) in by_label[label]["by_seed"]
                             else "-" for s in seeds) if label in by_label else "-" for label in labels]
        shares = [spread_text(summary["step_matching"][name][label], len(seeds))
                  if label in summary["step_matching"].get(name, {}) else "-" for label in others]
        lines.append(f"| {name} | " + " | ".join(finals + shares) + " |")
    return lines
