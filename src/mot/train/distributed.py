"""Data parallelism from outside the model: the process group, FSDP2, and reductions.

``torchrun --nproc-per-node N -m mot train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`init_distributed` starts the process group (NCCL on GPUs, gloo on CPUs). The model code
knows nothing of this (docs/design.md, "The layers"): :func:`shard_model` applies ``fully_shard`` to every block
and then to the root, as torchtitan does, so each block's parameters are gathered just in time.

Every rank runs every tower on every step, also on zero tokens (invariant 4), so the
all-gathers and reduce-scatters of a rank whose batch lacks a modality match the other ranks'.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str) -> torch.device:
    """``auto``: the local GPU when there is one, else the CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_distributed(device_preference: str = "auto") -> DistributedContext:
    """Join the process group that ``torchrun`` describes, or run alone."""
    device = resolve_device(device_preference)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), device)
    return DistributedContext(0, 1, device)


def shard_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """FSDP2: ``fully_shard`` each block, then the root (embedding, final norm, head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # FSDP2 warns that the model returns views (``F.linear`` on [B, L, D] does); the warning is
    # about in-place edits of outputs, which the trainer never makes.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(context.device.type, (context.world_size,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (in place; returned for chaining). A no-op alone."""
    if context.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: DistributedContext) -> None:
    if context.distributed:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    """Leave the process group once every rank is done (tearing gloo down while another rank still
    talks to it aborts the process)."""
    if context.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
