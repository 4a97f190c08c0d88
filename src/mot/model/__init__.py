"""The MoT model family: routing, per-tower layers, global attention, MoE, the model itself."""

from .masks import MaskSpec
from .routing import RoutingPlan, build_routing_plan
from .transformer import ModelOutput, MoTModel, build_model

__all__ = ["MaskSpec", "ModelOutput", "MoTModel", "RoutingPlan", "build_model", "build_routing_plan"]
