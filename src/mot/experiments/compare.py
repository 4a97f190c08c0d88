"""``mot compare``: train an experiment's architectures side by side, then report.

1. Resolve every architecture's recipe against the corpus and check that their training FLOPs per
   token match the reference's within the MoE routers' cost (MoT's towers cost nothing extra:
   a token runs through one tower); a mismatch is an error naming the architecture.
2. Train each architecture in turn (with ``seeds``, once per seed, one seed's comparison after the
   other). A finished run (its final checkpoint is there) is not retrained; an interrupted one
   resumes from its newest checkpoint, so ``mot compare`` can be stopped and started again at any
   point.
3. In the Transfusion setting, with ``samples.prompts``: draw every architecture's images for the
   same prompts and captions for the same validation images (``samples.py``).
4. With ``eval.every``: measure every architecture's kept checkpoints with ``mot eval``
   (``metric_curves.py``); the metrics asked for are checked against the setting before step 1.
5. Write the report (``report.py``): losses, step matching, plots, samples, metrics over
   training, over seeds (``seeds.py``), ``results.json``.

A series (``series.py``) runs steps 1–5 for each of its points, every point checked in step 1
before the first one trains, then writes the series' report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from ..config import ConfigError
from ..model.accounting import count_parameters, flops_per_token
from ..runs.checkpoints import CheckpointManager
from ..runs.recipe import TrainConfig
from ..runs.resolve import resolve_recipe
from .experiment import ExperimentConfig, seeded_recipes
from .metric_curves import eval_metrics, evaluate_over_training
from .report import collect_run, step_matching, write_report
from .seeds import seed_summary
from .series import point_experiments, write_series_report


def router_flops_per_token(config: TrainConfig) -> float:
    """Training FLOPs per token of the MoE routers (a ``d_model x experts`` matmul per layer, x3
    for the backward pass); 0 without MoE."""
    model = config.model
    if not model.moe.towers:
        return 0.0
    return 3 * 2 * model.d_model * model.moe.num_experts * model.n_layers


def check_flops(resolved: Dict[str, TrainConfig], reference: str, matched: bool = True) -> Dict[str, dict]:
    """Parameters and training FLOPs per token of each architecture; when ``matched``, raise when
    one differs from the reference's by more than its routers cost."""
    rows = {}
    reference_flops = flops_per_token(resolved[reference].model, resolved[reference].data.seq_len).training
    for label, config in resolved.items():
        flops = flops_per_token(config.model, config.data.seq_len).training
        allowed = max(router_flops_per_token(config), router_flops_per_token(resolved[reference]))
        if matched and abs(flops - reference_flops) > allowed + 1e-6 * reference_flops:
            raise ConfigError(f"architecture {label!r} costs {flops:,.0f} training FLOPs per token, the reference "
                              f"{reference!r} {reference_flops:,.0f}: the difference exceeds the routers' "
                              f"{allowed:,.0f}, so the comparison would not be FLOPs-controlled")
        counts = count_parameters(config.model)
        rows[label] = {"parameters_total": counts.total, "parameters_active": counts.active,
                       "flops_per_token": flops, "flops_ratio": flops / reference_flops}
    return rows


def is_finished(config: TrainConfig) -> bool:
    """Whether the run has its final checkpoint (then it is not trained again)."""
    path, _ = CheckpointManager(config.run_dir / "checkpoints", config.keep_last).latest()
    return path is not None and path.name == f"step-{config.steps:08d}"


@dataclass
class Plan:
    """A comparison checked before anything trains: every seed's recipes, resolved against the
    corpus, their FLOPs and the metrics over training they can be measured by."""

    seeded: Dict[int, Dict[str, TrainConfig]]
    resolved_by_seed: Dict[int, Dict[str, TrainConfig]]
    accounting: Dict[str, dict]
    metrics: Dict[str, list]


def plan_compare(experiment: ExperimentConfig, variant: Optional[str] = None) -> Plan:
    """Every architecture of every seed resolved and checked (an error names what is wrong)."""
    seeded = seeded_recipes(experiment, variant)
    resolved_by_seed = {seed: {label: resolve_recipe(recipe)[0] for label, recipe in by.items()}
                        for seed, by in seeded.items()}
    resolved = next(iter(resolved_by_seed.values()))  # the recipe's own seed
    accounting = check_flops(resolved, experiment.reference, experiment.flops_matched)
    metrics = {label: eval_metrics(config, experiment.eval.metrics) for label, config in resolved.items()}
    return Plan(seeded, resolved_by_seed, accounting, metrics)


def run_compare(experiment: ExperimentConfig, variant: Optional[str] = None,
                log: Callable[[str], None] = print) -> Path:
    """Train what is not trained yet and write the report (a series: every point's, then the
    series'); returns the report directory."""
    if experiment.series.points:
        points = point_experiments(experiment)
        plans = {point: plan_compare(e, variant) for point, e in points.items()}  # every point checked first
        reports = {}
        for index, (point, point_experiment) in enumerate(points.items(), start=1):
            log(f"series {experiment.name}: point {index}/{len(points)}, {point}")
            reports[point] = _run_planned(point_experiment, plans[point], variant, log)
        report = write_series_report(experiment, reports)
        log(f"series report: {report / 'report.md'}")
        return report
    return _run_planned(experiment, plan_compare(experiment, variant), variant, log)


def _run_planned(experiment: ExperimentConfig, plan: Plan, variant: Optional[str],
                 log: Callable[[str], None]) -> Path:
    from ..train.trainer import Trainer

    seeded, resolved_by_seed, accounting, metrics = plan.seeded, plan.resolved_by_seed, plan.accounting, plan.metrics
    recipes = next(iter(seeded.values()))  # the recipe's own seed: the report's main tables
    first = next(iter(recipes.values()))
    log(f"experiment {experiment.name}: {len(recipes)} architectures on {first.data.corpus} ({first.data.setting}), "
        f"{first.steps} steps each; FLOPs per token "
        f"{'match' if experiment.flops_matched else 'compared with'} the reference {experiment.reference!r}:")
    for label, row in accounting.items():
        log(f"  {label:>16}: {row['parameters_total']:>12,} parameters, {row['parameters_active']:>12,} active, "
            f"{row['flops_per_token']:>14,.0f} training FLOPs/token ({row['flops_ratio']:.4f} x)")
    runs = [(seed, label, recipe) for seed, by in seeded.items() for label, recipe in by.items()]
    for index, (seed, label, recipe) in enumerate(runs, start=1):
        name = f"{label} (seed {seed})" if len(seeded) > 1 else label
        if is_finished(recipe):
            log(f"[{index}/{len(runs)}] {name}: finished, not retrained ({recipe.run_dir})")
            continue
        log(f"[{index}/{len(runs)}] {name}: training")
        Trainer(recipe, log=log).train()
    by_seed = {seed: {label: collect_run(label, config, accounting[label]) for label, config in by.items()}
               for seed, by in resolved_by_seed.items()}
    results = by_seed[first.seed]
    seeds = None
    if len(by_seed) > 1:
        matching = {seed: step_matching(r, experiment.reference, experiment.smoothing) for seed, r in by_seed.items()}
        seeds = seed_summary(matching, by_seed, experiment.reference)
    samples = None
    if first.data.setting == "transfusion" and (experiment.samples.prompts or experiment.samples.scored):
        from ..generate.pipeline import TransfusionPipeline
        from .samples import draw_samples

        pipelines = {label: TransfusionPipeline.from_run(recipe.run_dir, log=lambda _: None)
                     for label, recipe in recipes.items()}
        directory = experiment.directory / "report"
        directory.mkdir(parents=True, exist_ok=True)
        samples = draw_samples(pipelines, experiment.samples, first.data.corpus, directory, log)
    over_training = None
    if experiment.eval.every:
        evaluate_over_training(recipes, metrics, experiment.eval, log)
        over_training = {label: recipe.run_dir for label, recipe in recipes.items()}
    report = write_report(experiment, results, variant, samples, over_training, seeds)
    log(f"report: {report / 'report.md'}")
    return report
