"""Patch size, batch size and network stage layout for a model size and a memory budget.

The memory model is an estimate of training memory (fp32 weights, gradients, SGD momentum, and the
activations autograd keeps) for one TSFM network; it is deliberately simple and documented here:

* encoder stage ``s`` (``V_s`` voxels, ``F_s`` channels, ``B_s`` residual blocks): each block keeps
  6 tensors (2 x conv, norm, activation), the down-sampling conv 3 more: ``V_s F_s (6 B_s + 3)``;
* decoder stage: interpolation, 1x1x1 conv, skip sum, one block: ``V_s F_s (2 + 6 decoder_blocks)``;
* Transformer bottleneck over ``T`` tokens of width ``W``, ``L`` layers, ``H`` heads: per layer
  ``T W (8 + 2 mlp_ratio)`` plus attention maps ``2 H T^2``;
* times batch size, times 4 bytes; plus 16 bytes per parameter.
"""

from __future__ import annotations

import math

import numpy as np

from medfoundry.models.sizes import MIN_FEATURE_MAP_VOX, ModelSize, stage_strides, total_stride

MAX_BATCH = 32
BATCH_DATASET_FRACTION = 0.05
"""A batch may cover at most this fraction of all the pool's voxels (nnU-Net's rule)."""


def count_params(size: ModelSize, num_stages: int, in_channels: int, num_classes: int) -> int:
    """Approximate parameter count of a TSFM network (convolutions and Transformer linear layers)."""
    feats = size.features(num_stages)
    conv = lambda cin, cout, k=3: cin * cout * k**3 + 3 * cout  # noqa: E731 - weight + bias + IN affine
    n = conv(in_channels, feats[0])
    for s, f in enumerate(feats):
        if s:
            n += conv(feats[s - 1], f)  # stride-2 down-sampling conv
        n += size.blocks_per_stage[s] * 2 * conv(f, f)
    for s in range(num_stages - 1):  # decoder: 1x1x1 conv halving channels + blocks
        n += conv(feats[s + 1], feats[s], 1) + size.decoder_blocks * 2 * conv(feats[s], feats[s])
    n += conv(feats[0], num_classes, 1)
    if size.transformer_depth:
        w = size.transformer_width
        per_layer = 4 * w * w + 2 * int(size.mlp_ratio * w) * w + 9 * w
        n += size.transformer_depth * per_layer + 2 * feats[-1] * w
    return int(n)


def estimate_memory_bytes(
    size: ModelSize,
    patch_vox: list[int],
    strides: list[list[int]],
    batch: int,
    in_channels: int = 1,
    num_classes: int = 8,
) -> int:
    """Estimated training memory in bytes (see the module docstring for the model)."""
    feats = size.features(len(strides))
    vox = float(np.prod(patch_vox))
    floats = 0.0
    for s, f in enumerate(feats):
        vox /= np.prod(strides[s])
        floats += vox * f * (6 * size.blocks_per_stage[s] + 3)
        if s < len(feats) - 1:
            floats += vox * f * (2 + 6 * size.decoder_blocks)
    if size.transformer_depth:
        tokens, w = vox, size.transformer_width
        floats += size.transformer_depth * (
            tokens * w * (8 + 2 * size.mlp_ratio) + 2 * size.transformer_heads * tokens**2
        )
    return int(4 * batch * floats + 16 * count_params(size, len(strides), in_channels, num_classes))


def plan_patch(
    size: ModelSize,
    median_shape_vox: list[float],
    spacing_mm: list[float],
    budget_bytes: float,
    total_pool_vox: float,
    in_channels: int = 1,
    num_classes: int = 8,
) -> dict:
    """Patch (Z, Y, X), batch size and stage strides fitting ``budget_bytes``.

    Start from the median shape (rounded up to a multiple of the total stride) and, while the estimate
    is over budget, shrink the axis that is largest relative to the median shape. Then grow the batch
    from 2 while it fits and covers at most ``BATCH_DATASET_FRACTION`` of the pool's voxels.
    """
    patch = [max(int(math.ceil(m)), MIN_FEATURE_MAP_VOX) for m in median_shape_vox]
    while True:
        strides = stage_strides(patch, spacing_mm, size.max_stages)
        step = total_stride(strides)
        patch = [max(step[a], int(math.ceil(patch[a] / step[a])) * step[a]) for a in range(3)]
        mem = estimate_memory_bytes(size, patch, strides, 2, in_channels, num_classes)
        if mem <= budget_bytes or all(p <= 2 * MIN_FEATURE_MAP_VOX for p in patch):
            break
        axis = int(np.argmax([patch[a] / median_shape_vox[a] for a in range(3)]))
        if patch[axis] <= 2 * MIN_FEATURE_MAP_VOX:
            axis = int(np.argmax(patch))
        patch[axis] -= step[axis] if patch[axis] > step[axis] else max(1, patch[axis] // 4)
    batch = 2
    max_batch = min(
        MAX_BATCH, max(2, int(BATCH_DATASET_FRACTION * total_pool_vox / np.prod(patch)))
    )
    while (
        batch < max_batch
        and estimate_memory_bytes(size, patch, strides, batch + 1, in_channels, num_classes)
        <= budget_bytes
    ):
        batch += 1
    return {
        "patch_size_vox": [int(p) for p in patch],
        "batch_size": int(batch),
        **stage_layout(size, patch, strides, batch, in_channels, num_classes),
    }


def stage_layout(
    size: ModelSize,
    patch_vox: list[int],
    strides: list[list[int]],
    batch: int,
    in_channels: int,
    num_classes: int,
) -> dict:
    """The plan's ``stages`` (stride (Z, Y, X) and features per stage) and ``estimated_memory_gb``."""
    feats = size.features(len(strides))
    mem = estimate_memory_bytes(size, list(patch_vox), strides, batch, in_channels, num_classes)
    return {
        "stages": [{"stride": s, "features": f} for s, f in zip(strides, feats, strict=True)],
        "estimated_memory_gb": round(mem / 2**30, 3),
    }
