"""PyTorch's own distributed engine: under ``torchrun`` the training loop uses DDP (or FSDP), gloo on
CPU and NCCL on GPU; otherwise a single process. Only rank 0 writes files."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medfoundry.utils.device import parse_device


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, info: DistInfo) -> torch.device:
    device = parse_device(name)
    if device.type == "cuda" and device.index is None and info.enabled:
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        if device.index is None:  # set_device and the memory counters need an index
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def wrap_model(
    model: torch.nn.Module, info: DistInfo, device: torch.device, fsdp: bool
) -> torch.nn.Module:
    if not info.enabled:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for module in model.shard_units():  # the model's own units, then the rest
            fully_shard(module)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def all_gather(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable, built by this program), in rank order; ``[obj]`` alone."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
