"""A series of comparisons: the same experiment at several points along one axis (model size,
global batch, training length), to see whether MoT's gain grows along it (the paper's figures 6,
18 and its longer runs).

``series:`` in an experiment names the points, each an override list applied to every
architecture on top of the experiment's own overrides::

    series:
      axis: parameters                 # parameters | tokens_per_step | steps: the plots' x axis
      points:
        w64: [model.d_model=64, model.n_layers=2, model.n_heads=2]
        w128: []
        w192: [model.d_model=192, model.n_layers=6, model.n_heads=6]

Every point is a whole comparison in ``<out_dir>/<name>/<point>`` (its runs, its report, its
seeds), trained and resumed like any other; the series' report (``<out_dir>/<name>/report``)
puts each point's step matching beside the others, with the axis value read from what the
reference actually trained (its parameter count, tokens per optimizer step, steps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional

from ..config import ConfigError
from ..eval.step_matching import share_text
from ..io.figures import save_figure
from ..io.files import atomic_write

#: what a series varies: its label, the unit a point's value is written with ("0.78M parameters"),
#: and how the value is read from the reference's results
AXES = {
    "parameters": ("parameters of the reference", "parameters", lambda r: r["parameters_total"]),
    "tokens_per_step": ("tokens per optimizer step", "tokens/step", lambda r: r["tokens_per_step"]),
    "steps": ("training steps", "steps", lambda r: r["steps"]),
}
#: the curves the series' plot shows (those a run has)
PLOTTED = ("valid/text", "valid/image", "valid/speech", "heldout/text", "heldout/image", "heldout/speech")


@dataclass
class SeriesConfig:
    """The points of a series (none: a single comparison)."""

    axis: str = "parameters"
    points: Dict[str, List[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise ConfigError(f"series.axis={self.axis!r}: expected one of {sorted(AXES)}")
        if len(self.points) == 1:
            raise ConfigError(f"series.points: a series needs at least two points, got {list(self.points)}")
        for point, overrides in self.points.items():
            if not point or "/" in point or point in ("report", "runs"):
                raise ConfigError(f"series.points: {point!r} is not a valid directory name for a point")
            if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
                raise ConfigError(f"series.points.{point}: expected a list of key=value overrides")


def point_experiments(experiment) -> Dict[str, object]:
    """Every point's comparison (an ``ExperimentConfig``, which imports this module): the experiment
    with the point's overrides added, named after the point and placed under the series' directory."""
    return {point: replace(experiment, name=point, out_dir=str(experiment.directory),
                           overrides=list(experiment.overrides) + list(overrides), series=SeriesConfig())
            for point, overrides in experiment.series.points.items()}


def _share(results: dict, label: str, curve: str, key: str) -> dict:
    """One point's share on a curve: ``{"value", "min", "max"}`` (over seeds where it has them;
    ``None``: not reached)."""
    seeds = results.get("seeds")
    if seeds:
        spread = seeds["step_matching" if key == "fraction" else "seconds_matching"].get(label, {}).get(curve)
        if spread:
            return {"value": spread["median"], "min": spread["min"], "max": spread["max"],
                    "seeds": len(spread.get("by_seed", seeds["seeds"]))}
    value = results["step_matching"].get(label, {}).get(curve, {}).get(key)
    return {"value": value, "min": value, "max": value, "seeds": 1}


def series_summary(axis: str, results_by_point: Dict[str, dict]) -> dict:
    """``{"axis", "reference", "points": {point: {"x", "step_matching": {label: {curve: share}},
    "seconds_matching": ..., "training_minutes": {label: minutes}}}}`` from every point's
    ``results.json`` (a share as :func:`_share` gives it)."""
    _, _, read = AXES[axis]
    points = {}
    for point, results in results_by_point.items():
        reference = results["reference"]
        curves = sorted({c for by in results["step_matching"].values() for c in by})
        labels = [label for label in results["architectures"] if label != reference]
        points[point] = {
            "x": read(results["architectures"][reference]),
            "step_matching": {l: {c: _share(results, l, c, "fraction") for c in curves} for l in labels},
            "seconds_matching": {l: {c: _share(results, l, c, "seconds_fraction") for c in curves} for l in labels},
            "training_minutes": {l: r["training_seconds"] / 60 for l, r in results["architectures"].items()}}
    return {"axis": axis, "reference": next(iter(results_by_point.values()))["reference"], "points": points}


def _tick_text(axis: str, x: float) -> str:
    """A point's value alone, as the plot's x axis shows it ("0.78M", "4,096")."""
    return f"{x / 1e6:.2f}M" if axis == "parameters" else f"{x:,.0f}"


def _x_text(axis: str, x: float) -> str:
    return f"{_tick_text(axis, x)} {AXES[axis][1]}"


def _cell(share: dict) -> str:
    if share["seeds"] > 1:
        if share["min"] is None:
            return "not reached (any seed)"
        return f"{share_text(share['value'])} [{share_text(share['min'])}–{share_text(share['max'])}]"
    return share_text(share["value"])


def series_markdown(name: str, summary: dict, overrides: Dict[str, List[str]]) -> str:
    axis, reference, points = summary["axis"], summary["reference"], summary["points"]
    header = " | ".join(f"{p} ({_x_text(axis, row['x'])})" for p, row in points.items())
    first = next(iter(points.values()))
    curves = sorted({c for by in first["step_matching"].values() for c in by})
    lines = [f"# Series {name}: step matching against `{reference}` along {AXES[axis][0]}", "",
             "Each point is a whole comparison (its report is in `<point>/report`). A share is the part of "
             f"`{reference}`'s steps (or training seconds) an architecture needs to reach `{reference}`'s final "
             "loss; below 100%: faster. With seeds: median [lowest–highest].", ""]
    for title, key in (("Share of steps", "step_matching"), ("Share of training seconds", "seconds_matching")):
        lines += [f"## {title}", "", f"| architecture | curve | {header} |", "|---|---|" + "---:|" * len(points)]
        for label in first[key]:
            for curve in curves:
                lines.append(f"| {label} | {curve} | "
                             + " | ".join(_cell(row[key][label][curve]) if curve in row[key].get(label, {}) else "-"
                                          for row in points.values()) + " |")
        lines.append("")
    lines += ["## Training time (minutes, training steps only)", "",
              "| architecture | " + " | ".join(points) + " |", "|---|" + "---:|" * len(points)]
    for label in first["training_minutes"]:
        lines.append(f"| {label} | " + " | ".join(f"{row['training_minutes'].get(label, 0):.1f}"
                                                   for row in points.values()) + " |")
    lines += ["", "![share of the reference's steps](share.png)", "", "## Points", ""]
    lines += [f"- `{p}`: " + (", ".join(f"`{o}`" for o in own) or "the experiment as it is")
              + ("" if p in points else " (left out: its reference has not finished training)")
              for p, own in overrides.items()]
    return "\n".join(lines) + "\n"


def series_plot(summary: dict, out: Path) -> Optional[Path]:
    """Share of the reference's steps against the axis, one panel per validation curve, one line
    per architecture (error bars: the range over seeds; a point never reached sits on the top edge
    as an open marker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = list(summary["points"].values())
    curves = [c for c in PLOTTED if any(c in by for row in points for by in row["step_matching"].values())]
    if not curves:
        return None
    ceiling = 1.5
    # the points themselves on the (log) x axis: matplotlib's minor labels overlap over a short range
    at = [row["x"] for row in points]
    at_text = [_tick_text(summary["axis"], x) for x in at]
    figure, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), squeeze=False)
    for axis, curve in zip(axes[0], curves):
        for label in points[0]["step_matching"]:
            xs, ys, low, high, missed = [], [], [], [], []
            for row in points:
                share = row["step_matching"].get(label, {}).get(curve)
                if share is None:
                    continue
                if share["value"] is None:
                    missed.append(row["x"])
                    continue
                xs.append(row["x"])
                ys.append(share["value"])
                low.append(share["value"] - (share["min"] if share["min"] is not None else share["value"]))
                high.append((share["max"] if share["max"] is not None else ceiling) - share["value"])
            line = axis.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=label)
            if missed:
                axis.plot(missed, [ceiling] * len(missed), "o", mfc="none", color=line[0].get_color())
        axis.axhline(1.0, ls=":", color="grey", label=f"{summary['reference']} (100%)")
        axis.set(title=curve, xlabel=AXES[summary["axis"]][0], ylabel="share of reference's steps",
                 xscale="log", ylim=(0, ceiling * 1.05))
        axis.set_xticks(at, at_text)
        axis.set_xticks([], minor=True)
        ticks = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, ceiling]
        axis.set_yticks(ticks, [f"{t:.0%}" for t in ticks[:-1]] + ["not\nreached"])
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return save_figure(figure, out, dpi=100)


def write_series_report(experiment, reports: Dict[str, Path]) -> Path:
    """The series' report from every point's ``report/results.json``; returns its directory."""
    results = {point: json.loads((report / "results.json").read_text()) for point, report in reports.items()}
    summary = series_summary(experiment.series.axis, results)
    directory = experiment.directory / "report"
    directory.mkdir(parents=True, exist_ok=True)
    series_plot(summary, directory / "share.png")
    as_json = json.dumps({"series": experiment.name, **summary}, indent=1) + "\n"
    atomic_write(directory / "results.json", lambda path: Path(path).write_text(as_json))
    text = series_markdown(experiment.name, summary, experiment.series.points)
    atomic_write(directory / "report.md", lambda path: Path(path).write_text(text))
    return directory
