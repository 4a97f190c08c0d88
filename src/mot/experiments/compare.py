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

With ``report_only`` (``mot compare --report-only``) steps 2–4 are skipped: the report covers the
runs that have finished (a seed counts where its reference has; a series point where its first
seed's reference has), names the ones that have not, reads the metrics over training already
measured and draws no samples. A report mid-way through a long series, or on a machine that
should not train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

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


def reportable(plan: Plan, reference: str) -> bool:
    """Whether a report can be written without training: the first seed's reference has finished."""
    return is_finished(next(iter(plan.resolved_by_seed.values()))[reference])


def run_compare(experiment: ExperimentConfig, variant: Optional[str] = None,
                log: Callable[[str], None] = print, report_only: bool = False) -> Path:
    """Train what is not trained yet and write the report (a series: every point's, then the
    series'); returns the report directory. ``report_only``: train nothing, report what has finished."""
    if experiment.series.points:
        points = point_experiments(experiment)
        plans = {point: plan_compare(e, variant) for point, e in points.items()}  # every point checked first
        if report_only:
            waiting = [point for point in points if not reportable(plans[point], experiment.reference)]
            for point in waiting:
                log(f"series {experiment.name}: point {point} left out, its reference has not finished")
            points = {point: e for point, e in points.items() if point not in waiting}
            if not points:
                raise ConfigError(f"--report-only: no point of series {experiment.name!r} has a finished reference "
                                  f"{experiment.reference!r} yet; nothing to report")
        reports = {}
        for index, (point, point_experiment) in enumerate(points.items(), start=1):
            log(f"series {experiment.name}: point {index}/{len(points)}, {point}")
            reports[point] = _run_planned(point_experiment, plans[point], variant, log, report_only)
        report = write_series_report(experiment, reports)
        log(f"series report: {report / 'report.md'}")
        return report
    return _run_planned(experiment, plan_compare(experiment, variant), variant, log, report_only)


def _finished_runs(plan: Plan, reference: str, log: Callable[[str], None]) -> Tuple[Dict[int, Dict[str, TrainConfig]],
                                                                                     List[str]]:
    """The finished runs of every seed whose reference has finished, and the names of those left out."""
    finished, missing = {}, []
    many = len(plan.resolved_by_seed) > 1
    for seed, by in plan.resolved_by_seed.items():
        done = {label: config for label, config in by.items() if is_finished(config)}
        left = [f"{label} (seed {seed})" if many else label for label in by if label not in done]
        if reference not in done:  # nothing of that seed can be compared
            left = [f"seed {seed} (its {reference!r} has not finished)"]
        else:
            finished[seed] = done
        missing += left
    for name in missing:
        log(f"not trained yet, left out of the report: {name}")
    return finished, missing


def _run_planned(experiment: ExperimentConfig, plan: Plan, variant: Optional[str],
                 log: Callable[[str], None], report_only: bool = False) -> Path:
    seeded, accounting, metrics = plan.seeded, plan.accounting, plan.metrics
    recipes = next(iter(seeded.values()))  # the recipe's own seed: the report's main tables
    first = next(iter(recipes.values()))
    if report_only:
        if not reportable(plan, experiment.reference):
            raise ConfigError(f"--report-only: the reference {experiment.reference!r} has not finished training "
                              f"({recipes[experiment.reference].run_dir}); nothing to compare against yet")
        resolved_by_seed, missing = _finished_runs(plan, experiment.reference, log)
        recipes = {label: recipe for label, recipe in recipes.items() if label in resolved_by_seed[first.seed]}
    else:
        _train(plan, experiment, log)
        resolved_by_seed, missing = plan.resolved_by_seed, []
    by_seed = {seed: {label: collect_run(label, config, accounting[label]) for label, config in by.items()}
               for seed, by in resolved_by_seed.items()}
    results = by_seed[first.seed]
    seeds = None
    if len(by_seed) > 1:
        matching = {seed: step_matching(r, experiment.reference, experiment.smoothing) for seed, r in by_seed.items()}
        seeds = seed_summary(matching, by_seed, experiment.reference)
    samples = None
    drawn = experiment.samples.prompts or experiment.samples.scored
    if first.data.setting == "transfusion" and drawn and report_only:
        log("samples not drawn (--report-only)")
    elif first.data.setting == "transfusion" and drawn:
        from ..generate.pipeline import TransfusionPipeline
        from .samples import draw_samples

        pipelines = {label: TransfusionPipeline.from_run(recipe.run_dir, log=lambda _: None)
                     for label, recipe in recipes.items()}
        directory = experiment.directory / "report"
        directory.mkdir(parents=True, exist_ok=True)
        samples = draw_samples(pipelines, experiment.samples, first.data.corpus, directory, log)
    over_training = None
    if experiment.eval.every:
        if not report_only:  # --report-only reads what was measured
            many = len(resolved_by_seed) > 1
            for seed, by in resolved_by_seed.items():  # every seed's, so that a metric's share has its spread
                evaluate_over_training(by, metrics, experiment.eval,
                                       (lambda m, s=seed: log(f"{m} (seed {s})")) if many else log)
        over_training = {seed: {label: config.run_dir for label, config in by.items()}
                         for seed, by in resolved_by_seed.items()}
    report = write_report(experiment, results, variant, samples, over_training, seeds, missing)
    log(f"report: {report / 'report.md'}")
    return report


def _train(plan: Plan, experiment: ExperimentConfig, log: Callable[[str], None]) -> None:
    """Train every run of the plan that has not finished (resuming an interrupted one)."""
    from ..train.trainer import Trainer

    seeded, accounting = plan.seeded, plan.accounting
    recipes = next(iter(seeded.values()))
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
