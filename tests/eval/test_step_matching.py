"""Step matching on synthetic curves whose answers are known exactly."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mot.eval.step_matching import (fraction_to_match_final, seconds_at, smooth, step_matching_curve, steps_to_reach,
                                    time_fraction_to_match_final)


def power_law(step, floor=1.5, scale=4.0, exponent=0.5):
    """A training-loss-like curve: ``floor + scale * step^-exponent``."""
    return floor + scale * step ** -exponent


def test_smoothing_is_an_exponential_moving_average():
    assert smooth([3.0, 1.0, 2.0], 0) == [3.0, 1.0, 2.0]
    assert smooth([0.0, 2.0, 2.0], 0.5) == [0.0, 1.0, 1.5]
    assert smooth([2.5] * 4, 0.9) == pytest.approx([2.5] * 4)
    assert smooth([], 0.3) == []
    for alpha in (-0.1, 1.0):
        with pytest.raises(ValueError, match=f"alpha={alpha}: expected 0 <= alpha < 1"):
            smooth([1.0], alpha)


def test_the_step_is_interpolated_linearly_between_the_points_around_the_target():
    assert steps_to_reach([100, 200], [2.0, 1.0], 1.25) == 175.0
    assert steps_to_reach([0, 10, 20, 30], [4.0, 3.0, 2.0, 1.0], 2.5) == 15.0
    assert steps_to_reach([0, 10, 20, 30], [4.0, 3.0, 2.0, 1.0], 2.0) == 20.0  # exactly on a point


def test_a_target_reached_at_the_first_point_counts_as_reached_there():
    assert steps_to_reach([50, 100], [1.0, 0.5], 2.0) == 50.0
    assert steps_to_reach([50, 100], [1.0, 0.5], 1.0) == 50.0


def test_the_first_crossing_counts_even_if_the_curve_rises_again():
    steps, losses = [0, 1, 2, 3, 4], [5.0, 3.0, 1.0, 4.0, 0.5]
    assert steps_to_reach(steps, losses, 2.0) == 1.5  # not the second crossing, between steps 3 and 4
    assert steps_to_reach([0, 1, 2, 3], [5.0, 4.0, 6.0, 3.0], 4.5) == 0.5


def test_a_target_never_reached_is_none():
    assert steps_to_reach([1, 2, 3], [3.0, 2.0, 1.5], 1.0) is None
    assert fraction_to_match_final([1, 2], [2.0, 1.0], [1, 2], [3.0, 1.1]) is None
    assert step_matching_curve([1, 2], [2.0, 0.5], [1, 2], [3.0, 1.0]) == [(1, 1.5), (2, None)]


def test_a_run_against_itself_matches_every_step():
    steps = list(range(10, 1001, 10))
    losses = [power_law(s) for s in steps]
    assert fraction_to_match_final(steps, losses, steps, losses) == 1.0
    assert step_matching_curve(steps, losses, steps, losses) == [(s, float(s)) for s in steps]


def test_a_run_that_is_the_reference_at_twice_the_steps_needs_half_of_them():
    steps = list(range(10, 1001, 10))
    reference = [power_law(s) for s in steps]
    other = [power_law(2 * s) for s in steps]  # other at s has the loss the reference has at 2s
    assert fraction_to_match_final(steps, reference, steps, other) == 0.5  # 500 is on the grid
    for step, matched in step_matching_curve(steps, reference, steps, other):
        if step < 2 * steps[0]:  # the other run is already below that loss at its first point
            assert matched == steps[0]
        else:
            # interpolation stays inside the grid interval that holds the true step s/2
            assert abs(matched - step / 2) <= 10
            if step % 20 == 0:
                assert matched == step / 2


@settings(max_examples=40, deadline=None)
@given(c=st.floats(0.2, 1.0), floor=st.floats(0.5, 3.0), scale=st.floats(0.5, 10.0), exponent=st.floats(0.1, 1.0))
def test_a_run_that_is_the_reference_with_steps_scaled_by_c_needs_the_fraction_c(c, floor, scale, exponent):
    reference_steps = list(range(10, 1001, 10))
    reference = [power_law(s, floor, scale, exponent) for s in reference_steps]
    other_steps = list(range(1, 1001))  # logged every step: interpolation error < one step
    other = [power_law(s / c, floor, scale, exponent) for s in other_steps]
    assert fraction_to_match_final(reference_steps, reference, other_steps, other) == pytest.approx(c, abs=1e-3)
    for step, matched in step_matching_curve(reference_steps, reference, other_steps, other):
        assert abs(matched - c * step) <= 1


@pytest.mark.parametrize("steps, losses, message", [
    ([1, 2, 3], [1.0, 2.0], r"curve: 3 steps but 2 losses; expected one loss per step"),
    ([], [], r"curve: the curve has no points"),
    ([1, 3, 3], [3.0, 2.0, 1.0], r"curve: steps are not strictly increasing: step 3 at index 2 follows step 3"),
    ([2, 1], [3.0, 2.0], r"curve: steps are not strictly increasing: step 1 at index 1 follows step 2"),
    ([1, 2], [3.0, math.nan], r"curve: the loss at step 2 is nan; expected a finite loss"),
    ([1, 2], [math.inf, 1.0], r"curve: the loss at step 1 is inf; expected a finite loss"),
])
def test_bad_curves_are_refused_with_the_problem_named(steps, losses, message):
    with pytest.raises(ValueError, match=message):
        steps_to_reach(steps, losses, 1.0)


def test_each_curve_of_a_comparison_is_checked_by_name():
    good = ([1, 2], [2.0, 1.0])
    with pytest.raises(ValueError, match="reference: 2 steps but 1 losses"):
        step_matching_curve([1, 2], [2.0], *good)
    with pytest.raises(ValueError, match="other: the loss at step 1 is nan"):
        fraction_to_match_final(*good, [1, 2], [math.nan, 1.0])
    with pytest.raises(ValueError, match="reference: the final step is 0"):
        fraction_to_match_final([-1, 0], [2.0, 1.0], *good)
    with pytest.raises(ValueError, match="target=nan: expected a finite loss"):
        steps_to_reach(*good, math.nan)


def test_the_clock_interpolates_training_seconds_from_step_zero():
    clock = [[10, 5.0], [20, 15.0]]
    assert seconds_at(clock, 0) == 0.0
    assert seconds_at(clock, 5) == 2.5
    assert seconds_at(clock, 15) == 10.0
    assert seconds_at(clock, 20) == 15.0
    assert seconds_at(clock, 21) is None


def test_wall_clock_matching_charges_slower_steps():
    """Two runs with the same losses per step: equal in steps; the one whose steps take twice as long
    needs twice the reference's seconds (MoE-4x's routing pays here, not in step matching)."""
    steps, losses = [10, 20, 30, 40], [4.0, 3.0, 2.5, 2.0]
    reference_clock = [[s, s * 1.0] for s in steps]
    slow_clock = [[s, s * 2.0] for s in steps]
    assert fraction_to_match_final(steps, losses, steps, losses) == 1.0
    assert time_fraction_to_match_final(steps, losses, reference_clock, steps, losses, slow_clock) == 2.0
    faster = [4.0, 2.0, 1.5, 1.0]  # reaches 2.0 at step 20, at 20 of the reference's 40 seconds
    assert time_fraction_to_match_final(steps, losses, reference_clock, steps, faster, reference_clock) == 0.5
    assert time_fraction_to_match_final(steps, losses, reference_clock, steps, [5.0] * 4, reference_clock) is None
