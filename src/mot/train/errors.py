"""The error of a run that cannot go on (light: ``mot``'s error mapping imports it without torch)."""

from ..errors import MotError


class TrainingError(MotError, RuntimeError):
    """The run cannot go on (a non-finite loss or gradient, a mismatched corpus); the message says
    why. ``mot`` exits with status 1 for it, not the 2 of bad input: the recipe and data were fine
    until the step it names."""
