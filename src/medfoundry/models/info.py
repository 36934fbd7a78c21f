"""Size, compute and memory of a model at a patch size, computed on the meta device (no memory used)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from medfoundry.models.registry import count_parameters, create_model
from medfoundry.models.sizes import get_size, total_stride


def describe_model(
    name: str, patch, in_channels: int = 1, num_classes: int = 8, batch_size: int = 2
) -> dict:
    """``{params, transformer_params, strides, features, tokens, forward_gflop, train_gflop,
    train_memory_gb}`` for one patch (FLOPs for batch 1; memory for ``batch_size``)."""
    from medfoundry.models.memory import estimate_memory_bytes

    model = create_model(name, in_channels, num_classes, patch_size=patch, device="meta")
    x = torch.zeros(1, in_channels, *patch, device="meta")
    with FlopCounterMode(display=False) as fwd:
        y = model(x)
    with FlopCounterMode(display=False) as both:
        model(x).sum().backward()
    del y
    tokens = 1
    for p, t in zip(patch, total_stride(model.strides), strict=True):
        tokens *= p // t
    size = get_size(name)
    return {
        "params": count_parameters(model),
        "transformer_params": sum(p.numel() for p in model.bottleneck.parameters()),
        "strides": model.strides,
        "features": size.features(len(model.strides)),
        "tokens": tokens,
        "forward_gflop": fwd.get_total_flops() / 1e9,
        "train_gflop": both.get_total_flops() / 1e9,
        "train_memory_gb": estimate_memory_bytes(
            size, list(patch), model.strides, batch_size, in_channels, num_classes
        )
        / 2**30,
    }
