"""What can be measured of generated speech units without a speech recogniser.

For text -> speech the best score is the WER of a transcript of the generated speech (see
:func:`mot.eval.text_scores.word_error_rate`), which needs a units -> text model. Without one,
these two scores say whether generated speech has a plausible length and a plausible mix of units,
and are named for exactly that, not as a measure of intelligibility: the duration error against
reference utterances, and the Jensen-Shannon divergence between the generated and reference
unigram unit distributions.
"""

from __future__ import annotations

from numbers import Integral
from typing import Dict, List, Sequence

import numpy as np

from .text_scores import MetricInputError

#: probability mass added to every unit before normalising, so each bin is positive and the
#: logarithms finite; it moves a divergence by at most about ``num_units * SMOOTHING``
SMOOTHING = 1e-12


def _counts(metric: str, name: str, lengths: Sequence[int]) -> np.ndarray:
    for index, length in enumerate(lengths):
        if not isinstance(length, Integral) or isinstance(length, bool) or length < 0:
            raise MetricInputError(f"{metric}: {name}[{index}] is {length!r}, not a unit count >= 0")
    return np.asarray(lengths, dtype=np.float64)


def duration_error(generated_lengths: Sequence[int], reference_lengths: Sequence[int],
                   frame_rate: float = 25.0) -> Dict[str, object]:
    """How far generated durations are from their references; lengths are unit counts at
    ``frame_rate`` units per second, paired by index.

    Returns ``mean_absolute_seconds`` (mean of ``|g - r| / frame_rate``), ``mean_relative``
    (mean of ``|g - r| / r``, so 0.1 is 10 % too long or too short) and the per-pair lists
    ``absolute_seconds`` and ``relative``. A reference must have at least one unit.
    """
    metric = "duration_error"
    generated = _counts(metric, "generated_lengths", generated_lengths)
    reference = _counts(metric, "reference_lengths", reference_lengths)
    if len(generated) != len(reference):
        raise MetricInputError(f"{metric}: {len(generated)} generated lengths but {len(reference)} reference lengths")
    if not len(reference):
        raise MetricInputError(f"{metric}: no lengths to compare")
    if not frame_rate > 0:
        raise MetricInputError(f"{metric}: frame_rate is {frame_rate!r}, not a positive rate")
    empty = np.flatnonzero(reference == 0)
    if len(empty):
        raise MetricInputError(f"{metric}: reference_lengths[{empty[0]}] is 0, which has no relative error")
    difference = np.abs(generated - reference)
    absolute_seconds = difference / frame_rate
    relative = difference / reference
    return {"mean_absolute_seconds": float(absolute_seconds.mean()),
            "mean_relative": float(relative.mean()),
            "absolute_seconds": absolute_seconds.tolist(),
            "relative": relative.tolist()}


def _histogram(metric: str, name: str, sequences: Sequence[Sequence[int]], num_units: int) -> np.ndarray:
    """Unit counts over all of ``sequences``, after checking every id is an int in range."""
    counts = np.zeros(num_units, dtype=np.float64)
    for index, sequence in enumerate(sequences):
        ids = np.asarray(sequence).reshape(-1)
        if ids.size and ids.dtype.kind not in "iu":
            raise MetricInputError(f"{metric}: {name}[{index}] holds {ids.dtype} values, not integer unit ids")
        outside = ids[(ids < 0) | (ids >= num_units)]
        if outside.size:
            raise MetricInputError(f"{metric}: unit id {int(outside[0])} in {name}[{index}] is outside [0, {num_units})")
        counts += np.bincount(ids.astype(np.int64), minlength=num_units)
    if not counts.sum():
        raise MetricInputError(f"{metric}: {name} holds no units")
    return counts


def unit_distribution_distance(generated: Sequence[Sequence[int]], reference: Sequence[Sequence[int]],
                               num_units: int) -> float:
    """Jensen-Shannon divergence (base 2, so in [0, 1]) between the unigram distributions of the
    units in ``generated`` and in ``reference``, pooled over each set's sequences.

    0 means the two sets use units at the same rates, 1 that they share no unit. Each
    distribution gets :data:`SMOOTHING` per unit, so disjoint sets score about
    ``1 - num_units * SMOOTHING`` (1 - 5e-10 for 512 units).
    """
    metric = "unit_distribution_distance"
    if not isinstance(num_units, Integral) or num_units < 1:
        raise MetricInputError(f"{metric}: num_units is {num_units!r}, not a positive count")
    distributions: List[np.ndarray] = []
    for name, sequences in (("generated", generated), ("reference", reference)):
        counts = _histogram(metric, name, sequences, num_units)
        smoothed = counts / counts.sum() + SMOOTHING
        distributions.append(smoothed / smoothed.sum())
    p, q = distributions
    middle = (p + q) / 2
    divergence = 0.5 * np.sum(p * np.log2(p / middle)) + 0.5 * np.sum(q * np.log2(q / middle))
    # rounding can step a hair outside the mathematical range [0, 1]
    return float(np.clip(divergence, 0.0, 1.0))
