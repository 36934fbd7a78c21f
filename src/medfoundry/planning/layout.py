"""Patch size, batch size and network stage layout for a model size and a memory budget.

The training-memory estimate is the model's own (:func:`medfoundry.models.memory.estimate_memory_bytes`,
documented there); planning shrinks the patch and grows the batch until it fits the budget.
"""

from __future__ import annotations

import math

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.models.memory import estimate_memory_bytes
from medfoundry.models.sizes import MIN_FEATURE_MAP_VOX, ModelSize, stage_strides, total_stride

MAX_BATCH = 32
BATCH_DATASET_FRACTION = 0.05
"""A batch may cover at most this fraction of all the pool's voxels (nnU-Net's rule)."""


def check_patch_layout(patch_vox: list[int], strides: list[list[int]], what: str = "patch") -> None:
    """A network can take ``patch_vox`` (Z, Y, X) with these stage ``strides`` only when it has at
    least one down-sampling stage and the patch is divisible by the total stride; else a one-line
    :class:`MedfoundryError` naming ``what`` (the flag or config key the patch came from)."""
    if len(patch_vox) != 3 or min(patch_vox) < 1:
        raise MedfoundryError(f"{what} must be three positive integers (Z Y X), got {patch_vox}")
    if len(strides) < 2:
        raise MedfoundryError(
            f"{what} {list(patch_vox)} is too small: the network needs one axis of at least "
            f"{2 * MIN_FEATURE_MAP_VOX} voxels to down-sample"
        )
    step = total_stride(strides)
    if any(p % s for p, s in zip(patch_vox, step, strict=True)):
        raise MedfoundryError(
            f"{what} {list(patch_vox)} must be divisible by the network's total stride {step} "
            "(Z, Y, X)"
        )


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
