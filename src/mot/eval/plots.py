"""Loss curves of runs as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from ..config import ConfigError
from ..io.figures import save_figure
from ..runs.metrics import read_metrics
from ..runs.run_dir import METRICS_FILE


def loss_curves(run_dir: str | Path) -> Dict[str, Dict[str, List[tuple]]]:
    """``{"train" | "valid/<split>": {modality: [(step, loss), ...]}}`` from a run's metrics."""
    curves: Dict[str, Dict[str, List[tuple]]] = {}
    for record in read_metrics(run_dir):
        if record["kind"] == "train":
            groups = {"train": record["loss_per_modality"]}
        else:
            groups = {f"valid/{split}": losses for split, losses in record["loss"].items()}
        for group, losses in groups.items():
            for modality, loss in losses.items():
                if loss is not None:
                    curves.setdefault(group, {}).setdefault(modality, []).append((record["step"], loss))
    return curves


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, title: str = "") -> Path:
    """One panel per curve group (train, each validation split), a line per run and modality,
    written to the PNG file ``out``."""
    if Path(out).suffix.lower() != ".png":  # matplotlib would pick the format from the suffix
        raise ConfigError(f"--out {out}: must name a .png file")
    for run in run_dirs:
        if not (Path(run) / METRICS_FILE).is_file():
            raise ConfigError(f"{run} is not a run directory with metrics: {run}/{METRICS_FILE} is missing")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {Path(r).name: loss_curves(r) for r in run_dirs}
    groups = sorted({g for curves in runs.values() for g in curves}, key=lambda g: (g != "train", g))
    if not groups:
        raise ConfigError(f"no metrics in {[str(r) for r in run_dirs]}: the runs have not logged a step yet")
    figure, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.8), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for axis, group in zip(axes[0], groups):
        for style, (name, curves) in zip(styles * 4, runs.items()):
            for modality, points in sorted(curves.get(group, {}).items()):
                steps, losses = zip(*points)
                axis.plot(steps, losses, style, label=f"{name}: {modality}" if len(runs) > 1 else modality)
        axis.set_title(group)
        axis.set_xlabel("step")
        axis.set_ylabel("next-token loss (nats)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return save_figure(figure, out)
