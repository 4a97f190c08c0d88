"""mot: Mixture-of-Transformers, sparse multi-modal foundation models (Liang et al., TMLR 2025)."""

from .config import ConfigError, ModelConfig, MoEConfig, load_config, save_config
from .model import MoTModel, build_model

__version__ = "0.1.0"
__all__ = ["ConfigError", "ModelConfig", "MoEConfig", "MoTModel", "build_model", "load_config", "save_config"]
