"""Speech unit scores without a recogniser: exact duration errors and a bounded JS divergence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from mot.eval.speech_scores import duration_error, unit_distribution_distance
from mot.eval.text_scores import MetricInputError


def test_duration_error_on_hand_made_lengths():
    errors = duration_error([50, 100, 30], [50, 75, 60])  # 25 units a second
    assert errors["absolute_seconds"] == pytest.approx([0.0, 1.0, 1.2])
    assert errors["relative"] == pytest.approx([0.0, 1 / 3, 0.5])
    assert errors["mean_absolute_seconds"] == pytest.approx(2.2 / 3)
    assert errors["mean_relative"] == pytest.approx((1 / 3 + 0.5) / 3)
    faster = duration_error(np.array([50, 100, 30]), [50, 75, 60], frame_rate=50.0)
    assert faster["mean_absolute_seconds"] == pytest.approx(1.1 / 3)
    assert faster["mean_relative"] == errors["mean_relative"]  # a ratio of counts: no rate in it


def test_duration_error_rejects_bad_lengths():
    with pytest.raises(MetricInputError, match="2 generated lengths but 1 reference lengths"):
        duration_error([1, 2], [1])
    with pytest.raises(MetricInputError, match="no lengths"):
        duration_error([], [])
    with pytest.raises(MetricInputError, match=r"reference_lengths\[1\] is 0"):
        duration_error([3, 4], [5, 0])
    with pytest.raises(MetricInputError, match=r"generated_lengths\[0\] is -3"):
        duration_error([-3], [5])
    with pytest.raises(MetricInputError, match=r"generated_lengths\[0\] is 2.5"):
        duration_error([2.5], [5])
    with pytest.raises(MetricInputError, match="frame_rate is 0"):
        duration_error([3], [5], frame_rate=0)


def test_identical_distributions_are_zero_apart_and_disjoint_ones_one():
    # the same rates of use in different orders and amounts
    assert unit_distribution_distance([[0, 1, 2, 2]], [[2, 1], [0, 2], [2, 1, 0, 2]], num_units=8) == 0.0
    assert unit_distribution_distance([[0, 0, 1]], [[2, 3], [3]], num_units=512) == pytest.approx(1.0, abs=1e-8)


def test_the_divergence_matches_scipy_and_is_symmetric():
    generated, reference = [[0, 0], [0, 0]], [[0, 1]]  # distributions (1, 0) and (1/2, 1/2)
    expected = jensenshannon([1.0, 0.0], [0.5, 0.5], base=2) ** 2
    assert expected == pytest.approx(0.311278, abs=1e-6)
    assert unit_distribution_distance(generated, reference, num_units=2) == pytest.approx(expected, abs=1e-9)
    assert unit_distribution_distance(reference, generated, num_units=2) == pytest.approx(expected, abs=1e-9)


units = st.lists(st.lists(st.integers(0, 15), max_size=12), min_size=1, max_size=4).filter(
    lambda sequences: any(sequences))


@given(units, units)
def test_the_divergence_lies_between_zero_and_one_and_is_symmetric(generated, reference):
    forward = unit_distribution_distance(generated, reference, num_units=16)
    assert 0.0 <= forward <= 1.0
    assert unit_distribution_distance(reference, generated, num_units=16) == pytest.approx(forward, abs=1e-12)


def test_unit_distribution_distance_rejects_bad_ids():
    with pytest.raises(MetricInputError, match=r"unit id 7 in reference\[1\] is outside \[0, 4\)"):
        unit_distribution_distance([[0, 1]], [[0], [3, 7]], num_units=4)
    with pytest.raises(MetricInputError, match=r"unit id -1 in generated\[0\]"):
        unit_distribution_distance([[0, -1]], [[0]], num_units=4)
    with pytest.raises(MetricInputError, match=r"generated\[0\] holds float64 values"):
        unit_distribution_distance([[0.5]], [[0]], num_units=4)
    with pytest.raises(MetricInputError, match="reference holds no units"):
        unit_distribution_distance([[0]], [[], []], num_units=4)
    with pytest.raises(MetricInputError, match="num_units is 0"):
        unit_distribution_distance([[0]], [[0]], num_units=0)
