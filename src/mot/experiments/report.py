"""The report of a comparison: ``report.md``, PNG plots and ``results.json`` with every number.

Step matching (the paper's section 4): for each architecture and modality, the fraction of the
reference's (dense) steps it needs to reach the reference's final loss, on the training loss
(smoothed with an exponential moving average, since a 20-step interval of a tiny run is noisy)
and on every validation split (evaluated on the same batches each time, so not smoothed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..eval.caption_use import caption_use_table
from ..eval.step_matching import (fraction_to_match_final, share_text, smooth, step_matching_curve,
                                  time_fraction_to_match_final)
from ..io.figures import save_figure
from ..io.files import atomic_write
from ..runs.metrics import read_metrics
from ..runs.recipe import TrainConfig
from ..runs.run_dir import read_environment
from .experiment import ExperimentConfig
from .metric_curves import (METRICS_PLOT, evaluation_seconds, metric_curves, metric_markdown, metric_plot,
                            metric_seed_summary, metric_seeds_markdown, metric_step_matching)
from .seeds import seeds_markdown

ALL = "all"  # the loss over every trained position


def collect_run(label: str, config: TrainConfig, accounting: dict) -> dict:
    """One architecture's numbers from its run directory."""
    records = read_metrics(config.run_dir)
    train: Dict[str, List[list]] = {}
    valid: Dict[str, Dict[str, List[list]]] = {}
    clock, spent = [], 0.0  # [[step, training seconds until it]]: evaluation and checkpoints excluded
    for record in records:
        if record["kind"] == "train":
            spent += record["seconds"]
            clock.append([record["step"], spent])
            for modality, loss in {ALL: record["loss"], **record["loss_per_modality"]}.items():
                if loss is not None:
                    train.setdefault(modality, []).append([record["step"], loss])
        else:
            for split, losses in record["loss"].items():
                for modality, loss in losses.items():
                    if loss is not None:
                        valid.setdefault(split, {}).setdefault(modality, []).append([record["step"], loss])
    environment = read_environment(config.run_dir)
    data = config.data  # the global batch: every micro-batch of every rank
    tokens_per_step = data.batch_rows * data.grad_accum * data.seq_len * environment.get("world_size", 1)
    return {"label": label, "run_dir": str(config.run_dir), "setting": config.data.setting, **accounting,
            "training_seconds": spent, "clock": clock,
            "steps": config.steps, "tokens_per_step": tokens_per_step, "train": train, "valid": valid,
            "environment": environment}


def _curves(result: dict, smoothing: float) -> Dict[str, List[list]]:
    """Every curve step matching uses, by name: ``train/<modality>`` (smoothed), ``<split>/<modality>``."""
    curves = {f"train/{m}": [[s, v] for s, v in zip((p[0] for p in points), smooth([p[1] for p in points], smoothing))]
              for m, points in result["train"].items()}
    curves.update({f"{split}/{m}": points for split, by in result["valid"].items() for m, points in by.items()})
    return curves


def step_matching(results: Dict[str, dict], reference: str, smoothing: float) -> Dict[str, dict]:
    """``{label: {curve: {"fraction": float | None, "curve": [[ref_step, step | None], ...]}}}``."""
    reference_curves = _curves(results[reference], smoothing)
    matched = {}
    for label, result in results.items():
        if label == reference:
            continue
        matched[label] = {}
        for name, points in _curves(result, smoothing).items():
            if name not in reference_curves:
                continue
            ref_steps, ref_losses = zip(*reference_curves[name])
            steps, losses = zip(*points)
            matched[label][name] = {
                "fraction": fraction_to_match_final(ref_steps, ref_losses, steps, losses),
                "seconds_fraction": time_fraction_to_match_final(ref_steps, ref_losses, results[reference]["clock"],
                                                                 steps, losses, result["clock"]),
                "curve": [list(pair) for pair in step_matching_curve(ref_steps, ref_losses, steps, losses)]}
    return matched


def _final(points: List[list]) -> str:
    return f"{points[-1][1]:.3f}" if points else "-"


def write_report(experiment: ExperimentConfig, results: Dict[str, dict], variant: Optional[str],
                 samples: Optional[dict] = None, over_training: Optional[dict] = None,
                 seeds: Optional[dict] = None, missing: Sequence[str] = ()) -> Path:
    """Write ``report.md``, the plots and ``results.json`` under ``<experiment dir>/report``
    (with ``samples``, what :func:`.samples.draw_samples` returned: the grid and the captions;
    with ``over_training``, ``{seed: {label: run directory}}``, the recipe's own seed first: the
    metrics over training are read from their ``eval.json``, the own seed's for the main tables and
    every seed's for their spread; with ``seeds``, :func:`.seeds.seed_summary` of the comparison
    over seeds; ``missing``: the runs that have not finished and are left out, named in the report)."""
    directory = experiment.directory / "report"
    directory.mkdir(parents=True, exist_ok=True)
    matching = step_matching(results, experiment.reference, experiment.smoothing)
    plots = _plots(results, matching, experiment, directory)
    metrics = _metrics_over_training(over_training, experiment.reference, directory)
    data = {"experiment": experiment.name, "variant": variant, "reference": experiment.reference,
            "smoothing": experiment.smoothing, "flops_matched": experiment.flops_matched, "architectures": results,
            "step_matching": matching, "plots": plots, "samples": samples, "metrics_over_training": metrics,
            "seeds": seeds, "missing": list(missing)}
    as_json = json.dumps(data, indent=1) + "\n"
    atomic_write(directory / "results.json", lambda path: Path(path).write_text(as_json))
    text = _markdown(experiment, results, matching, plots, variant)
    if missing:
        text += ("\n## Not trained yet\n\nWritten with `--report-only` while these runs had not finished; "
                 "they are left out of every table above and below: " + ", ".join(missing) + ".\n")
    if seeds:
        text += "\n".join(seeds_markdown(seeds, experiment.reference, _curve_names(results, experiment.reference))) + "\n"
    text += _samples_markdown(samples)
    if metrics:
        text += "\n".join(metric_markdown(metrics["curves"], metrics["step_matching"], experiment.reference,
                                          metrics["plot"], metrics["seconds"])) + "\n"
        if metrics["seeds"]:
            text += "\n".join(metric_seeds_markdown(metrics["seeds"], experiment.reference)) + "\n"
    atomic_write(directory / "report.md", lambda path: Path(path).write_text(text))
    return directory


def _metrics_over_training(by_seed: Optional[dict], reference: str, directory: Path) -> Optional[dict]:
    if not by_seed:
        return None
    curves_by_seed = {seed: metric_curves(run_dirs) for seed, run_dirs in by_seed.items()}
    own = next(iter(by_seed))  # the recipe's own seed: the main tables
    curves = curves_by_seed[own]
    plot = metric_plot(curves, directory / METRICS_PLOT)
    return {"curves": curves, "step_matching": metric_step_matching(curves, reference),
            "plot": plot.name if plot else None, "seconds": evaluation_seconds(by_seed[own]),
            "seeds": metric_seed_summary(curves_by_seed, reference)}


def _samples_markdown(samples: Optional[dict]) -> str:
    if not samples:
        return ""
    sampling = samples["sampling"]
    methods = samples.get("methods") or {"": sampling["method"]}
    how = (f"{sampling['steps']} {next(iter(methods.values())).upper()} steps" if len(set(methods.values())) == 1
           else f"{sampling['steps']} steps (" + ", ".join(f"{label}: {m.upper()}" for label, m in methods.items()) + ")")
    lines = ["", "## Samples", "",
             f"{how}, classifier-free guidance {sampling['cfg_scale']}, seed {sampling['seed']}: every architecture "
             "starts from the same noise."]
    if samples.get("grid"):
        lines += ["", f"![samples]({samples['grid']})"]
    scores = samples.get("scores") or {}
    if scores:
        attributes = list(scores["ceiling"])
        header = [f"{kind} {a}" for kind in ("text→image", "image→text") for a in attributes]
        lines += ["", f"Exact scores on {scores['scenes']} single-object validation scenes (ShapeScenes): the "
                  "share of images drawn from a scene's caption that show its background, object colour and "
                  "shape, and of greedy captions of its image that name them. Ceiling: the scorer on VAE "
                  "reconstructions of rendered scenes.", "",
                  "| | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header),
                  "| ceiling | " + " | ".join(f"{100 * scores['ceiling'][a]:.0f}%" for a in attributes)
                  + " |" + " - |" * len(attributes)]
        for label, by in scores.items():
            if label in ("scenes", "ceiling"):
                continue
            lines.append(f"| {label} | " + " | ".join(f"{100 * by[kind][a]:.0f}%" for kind in ("text_to_image",
                                                                                        "image_to_text")
                                                      for a in attributes) + " |")
        use = {label: by["caption_use"] for label, by in scores.items()
               if label not in ("scenes", "ceiling") and "caption_use" in by}
        if use:
            lines += ["", "Does the denoiser read the caption? Mean squared error of the predicted noise on "
                      "those scenes at fixed timesteps and noise, with the image's own caption, another "
                      "scene's, none, and its own with the transformer's output zeroed (`bypass`: what the "
                      "patch path does alone). Own below other and none: the caption is used.", "",
                      *caption_use_table(use)]
    if samples["captions"]:
        labels = [k for k in samples["captions"][0] if k != "true"]
        lines += ["", "Greedy captions of validation images:", "",
                  "| true caption | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        lines += ["| " + " | ".join(row[k].replace("|", "/") for k in ["true", *labels]) + " |"
                  for row in samples["captions"]]
    return "\n".join(lines) + "\n"


def _markdown(experiment, results, matching, plots, variant) -> str:
    reference = results[experiment.reference]
    environment = reference.get("environment", {})
    modalities = [m for m in reference["train"] if m != ALL]
    splits = sorted({s for r in results.values() for s in r["valid"]})
    lines = [f"# {experiment.name}: {', '.join(results)}", "",
             f"Recipe `{experiment.recipe}`{f' with variant `{variant}`' if variant else ''}, "
             f"{reference['steps']} steps each, identical data order, seed and schedule; reference "
             f"`{experiment.reference}`. Machine: {environment.get('device', '?')}, "
             f"{environment.get('cpu_count', '?')} CPUs, torch {environment.get('torch', '?')}, "
             f"git {environment.get('git_revision', '?')}."
             + ("" if experiment.flops_matched else " The architectures' FLOPs per token differ (not FLOPs-matched).")
             + (" Image losses are the diffusion loss (mean squared error of the predicted noise, or velocity for "
                "flow runs, per image); text losses are nats per token." if reference.get("setting") == "transfusion" else ""),
             "",
             "| architecture | parameters | active | training FLOPs/token | vs reference | training time | "
             + " | ".join(f"final train {m}" for m in modalities)
             + "".join(f" | final {s} {m}" for s in splits for m in modalities) + " |",
             "|---|" + "---:|" * (5 + len(modalities) * (1 + len(splits)))]
    for label, r in results.items():
        lines.append(f"| {label} | {r['parameters_total']:,} | {r['parameters_active']:,} | {r['flops_per_token']:,.0f} "
                     f"| {r['flops_ratio']:.4f}x | {r['training_seconds'] / 60:.1f} min | "
                     + " | ".join(_final(r["train"].get(m, [])) for m in modalities)
                     + "".join(f" | {_final(r['valid'].get(s, {}).get(m, []))}" for s in splits for m in modalities)
                     + " |")
    names = _curve_names(results, experiment.reference)
    lines += ["", f"## Step matching (share of `{experiment.reference}`'s steps needed to reach its final loss)", "",
              f"Training losses smoothed with an exponential moving average ({experiment.smoothing}) first; "
              f"validation losses as measured. Below 100%: faster than the reference.", "",
              "| architecture | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, by in matching.items():
        lines.append(f"| {label} | " + " | ".join(share_text(by.get(n, {}).get("fraction")) for n in names) + " |")
    lines += ["", f"## Wall-clock matching (share of `{experiment.reference}`'s training seconds needed to reach "
              "its final loss)", "",
              "The same crossings timed by each run's own clock: seconds spent in training steps (evaluation and "
              "checkpoints excluded), on the machine above. Below 100%: faster than the reference in time.", "",
              "| architecture | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, by in matching.items():
        lines.append(f"| {label} | " + " | ".join(share_text(by.get(n, {}).get("seconds_fraction")) for n in names)
                     + " |")
    lines += ["", "## Plots", ""] + [f"![{name}]({file})" for name, file in plots.items()]
    return "\n".join(lines) + "\n"


def _curve_names(results: Dict[str, dict], reference: str) -> List[str]:
    """The curves the report's tables show: ``train/all``, ``train/<modality>``, ``<split>/<modality>``."""
    modalities = [m for m in results[reference]["train"] if m != ALL]
    splits = sorted({s for r in results.values() for s in r["valid"]})
    return [f"train/{m}" for m in [ALL] + modalities] + [f"{s}/{m}" for s in splits for m in modalities]


def _plots(results, matching, experiment, directory: Path) -> Dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    groups = {"train": {label: r["train"] for label, r in results.items()}}
    for split in sorted({s for r in results.values() for s in r["valid"]}):
        groups[split] = {label: r["valid"].get(split, {}) for label, r in results.items()}
    for group, by_label in groups.items():
        modalities = sorted({m for curves in by_label.values() for m in curves}, key=lambda m: (m != ALL, m))
        figure, axes = plt.subplots(1, len(modalities), figsize=(4.5 * len(modalities), 3.6), squeeze=False)
        for axis, modality in zip(axes[0], modalities):
            for label, curves in by_label.items():
                if modality in curves:
                    steps, losses = zip(*curves[modality])
                    axis.plot(steps, losses, label=label)
            diffusion = modality == "image" and any(r.get("setting") == "transfusion" for r in results.values())
            axis.set(title=f"{group}: {modality}", xlabel="step",
                     ylabel="diffusion loss (MSE)" if diffusion else "loss (nats/token)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        files[f"loss, {group}"] = _save(figure, directory / f"loss_{group}.png")
    names = sorted({n for by in matching.values() for n in by if n.startswith("train/")})
    if names:
        figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
        for axis, name in zip(axes[0], names):
            last = 0
            for label, by in matching.items():
                points = [(s, m) for s, m in by.get(name, {}).get("curve", []) if m is not None]
                if points:
                    axis.plot(*zip(*points), label=label)
                    last = max(last, points[-1][0])
            axis.plot([0, last], [0, last], ":", color="grey", label=f"{experiment.reference} (y = x)")
            axis.set(title=f"step matching, {name}", xlabel=f"{experiment.reference} step",
                     ylabel="step reaching the same loss")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        files["step matching"] = _save(figure, directory / "step_matching.png")
    return files


def _save(figure, path: Path) -> str:
    return save_figure(figure, path, dpi=100).name
