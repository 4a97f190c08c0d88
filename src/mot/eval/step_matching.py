"""Step matching (the paper's section 4, Figure 5b/d/f): how many steps another run (MoT) needs to
reach the loss a reference run (dense) reached at each of its steps.

A curve is ``steps`` (strictly increasing) and ``losses`` (finite), one loss per step. Between two
logged points a curve is taken to be linear, so the step at which it reaches a loss is
interpolated; before its first point nothing is known, so a loss reached there counts as reached
at the first step.

"MoT needs 45.5% of dense's steps" is :func:`fraction_to_match_final`: the steps the other run
needs to reach the reference's final loss, over the reference's final step. The paper's figure 19
asks the same in wall-clock time (:func:`time_fraction_to_match_final`): each run's *clock* maps a
step to the training seconds spent up to it, so a run whose steps are slower (MoE-4x's routing)
pays for them there.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple


def smooth(values: Sequence[float], alpha: float) -> List[float]:
    """Exponential moving average ``s[i] = alpha * s[i-1] + (1 - alpha) * values[i]``, ``s[0] = values[0]``.

    ``alpha`` in ``[0, 1)``; 0 leaves the values as they are. Training losses are noisy, and one
    lucky batch would otherwise count as reaching a loss. The average lags the curve by about
    ``alpha / (1 - alpha)`` points, so smooth both runs of a comparison with the same ``alpha``
    (and log them at the same interval) for the lags to cancel.
    """
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha={alpha}: expected 0 <= alpha < 1")
    smoothed: List[float] = []
    for value in values:
        smoothed.append(value if not smoothed else alpha * smoothed[-1] + (1 - alpha) * value)
    return smoothed


def steps_to_reach(steps: Sequence[float], losses: Sequence[float], target: float) -> Optional[float]:
    """The first step at which the curve reaches ``target`` (loss <= target), ``None`` if it never does.

    Linearly interpolated between the last point above ``target`` and the first point at or below
    it. Only the first crossing counts: a later rise above ``target`` does not undo it, because
    step matching asks when a run first attains the reference's loss (the training that got it
    there is spent either way).
    """
    _check_curve("curve", steps, losses)
    if not math.isfinite(target):
        raise ValueError(f"target={target}: expected a finite loss")
    for i, loss in enumerate(losses):
        if loss <= target:
            if i == 0 or loss == target:
                return float(steps[i])
            before, after = steps[i - 1], steps[i]
            above = losses[i - 1]  # > target, else the loop would have stopped there
            return before + (above - target) / (above - loss) * (after - before)
    return None


def step_matching_curve(reference_steps: Sequence[int], reference_losses: Sequence[float],
                        other_steps: Sequence[int], other_losses: Sequence[float]
                        ) -> List[Tuple[int, Optional[float]]]:
    """``[(s, steps the other run needs to reach the reference's loss at s)]`` for each reference step ``s``.

    The plot of the paper's Figure 5b: points under the diagonal mean the other run is faster.
    ``None`` where the other run never reaches that loss.
    """
    _check_curve("reference", reference_steps, reference_losses)
    _check_curve("other", other_steps, other_losses)
    return [(step, steps_to_reach(other_steps, other_losses, loss))
            for step, loss in zip(reference_steps, reference_losses)]


def fraction_to_match_final(reference_steps: Sequence[int], reference_losses: Sequence[float],
                            other_steps: Sequence[int], other_losses: Sequence[float]) -> Optional[float]:
    """The steps the other run needs to reach the reference's final loss, over the reference's
    final step (0.455: "MoT needs 45.5% of dense's steps"); ``None`` if it never reaches it."""
    _check_curve("reference", reference_steps, reference_losses)
    _check_curve("other", other_steps, other_losses)
    if reference_steps[-1] <= 0:
        raise ValueError(f"reference: the final step is {reference_steps[-1]}; a fraction of it needs it > 0")
    reached = steps_to_reach(other_steps, other_losses, reference_losses[-1])
    return None if reached is None else reached / reference_steps[-1]


def seconds_at(clock: Sequence[Sequence[float]], step: float) -> Optional[float]:
    """The training seconds a run had spent at ``step``: its ``clock`` ``[[step, seconds], ...]``
    (cumulative, strictly increasing steps) interpolated linearly, from 0 seconds at step 0;
    ``None`` past the clock's last step."""
    previous_step, previous_seconds = 0.0, 0.0
    for clock_step, seconds in clock:
        if step <= clock_step:
            if clock_step == previous_step:
                return float(seconds)
            return previous_seconds + (step - previous_step) / (clock_step - previous_step) * (seconds - previous_seconds)
        previous_step, previous_seconds = clock_step, seconds
    return None


def time_fraction_to_match_final(reference_steps: Sequence[int], reference_losses: Sequence[float],
                                 reference_clock: Sequence[Sequence[float]], other_steps: Sequence[int],
                                 other_losses: Sequence[float], other_clock: Sequence[Sequence[float]]
                                 ) -> Optional[float]:
    """:func:`fraction_to_match_final` in training seconds: the seconds the other run spent until it
    reached the reference's final loss, over the seconds the reference spent until its final step;
    ``None`` if it never reaches it (or a clock stops before the step it is asked about)."""
    _check_curve("reference", reference_steps, reference_losses)
    _check_curve("other", other_steps, other_losses)
    reached = steps_to_reach(other_steps, other_losses, reference_losses[-1])
    spent = seconds_at(other_clock, reached) if reached is not None else None
    total = seconds_at(reference_clock, reference_steps[-1])
    if spent is None or not total:
        return None
    return spent / total


def share_text(value: Optional[float]) -> str:
    """A step-matching share as the reports print it: ``"45.5%"`` or ``"not reached"``."""
    return "not reached" if value is None else f"{100 * value:.1f}%"


def _check_curve(name: str, steps: Sequence[float], losses: Sequence[float]) -> None:
    """A :class:`ValueError` naming the curve and the problem, unless the curve is usable."""
    if len(steps) != len(losses):
        raise ValueError(f"{name}: {len(steps)} steps but {len(losses)} losses; expected one loss per step")
    if not steps:
        raise ValueError(f"{name}: the curve has no points")
    for i in range(1, len(steps)):
        if not steps[i] > steps[i - 1]:
            raise ValueError(f"{name}: steps are not strictly increasing: step {steps[i]} at index {i} "
                             f"follows step {steps[i - 1]}")
    for step, loss in zip(steps, losses):
        if not math.isfinite(loss):
            raise ValueError(f"{name}: the loss at step {step} is {loss}; expected a finite loss")
