"""Training objectives: the autoregressive (next-token) loss."""

from .autoregressive import IGNORE_INDEX, LossBreakdown, next_token_loss, per_modality_mean

__all__ = ["IGNORE_INDEX", "LossBreakdown", "next_token_loss", "per_modality_mean"]
