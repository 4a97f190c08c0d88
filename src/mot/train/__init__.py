"""Training: optimizer and schedule, checkpoints, random-state capture (and the trainer on top)."""

from .checkpoint import CheckpointManager, load_model_optimizer_state, model_optimizer_state
from .optim import OptimConfig, build_optimizer, clip_gradients, learning_rate, parameter_groups
from .rng import capture_rng_state, restore_rng_state

__all__ = ["CheckpointManager", "OptimConfig", "build_optimizer", "capture_rng_state", "clip_gradients",
           "learning_rate", "load_model_optimizer_state", "model_optimizer_state", "parameter_groups",
           "restore_rng_state"]
