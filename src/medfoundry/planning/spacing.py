"""Target spacing: the median spacing, with nnU-Net's anisotropy rule for thick-slice data."""

from __future__ import annotations

import numpy as np

ANISOTROPY_RATIO = 3.0
"""An axis is 'low resolution' when its median spacing is this many times the next largest."""


def target_spacing(spacings_mm: np.ndarray, shapes_vox: np.ndarray) -> list[float]:
    """Target spacing ``(Z, Y, X)`` mm for a dataset.

    ``spacings_mm`` and ``shapes_vox`` are ``(N, 3)``. Normally the per-axis median. When the coarsest
    axis is over ``ANISOTROPY_RATIO`` times coarser than the others *and* holds few voxels (its median
    voxel count times the ratio is below the smallest in-plane count), resampling it to the median
    would invent many interpolated slices; the 10th percentile of its spacings is used instead, but
    never finer than the in-plane spacing.
    """
    spacings = np.asarray(spacings_mm, dtype=np.float64)
    shapes = np.asarray(shapes_vox, dtype=np.float64)
    target = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    anisotropic_spacing = target[worst] > ANISOTROPY_RATIO * max(target[others])
    few_slices = median_shape[worst] * ANISOTROPY_RATIO < min(median_shape[others])
    if anisotropic_spacing and few_slices:
        p10 = np.percentile(spacings[:, worst], 10)
        target[worst] = max(p10, max(target[others]) + 1e-5)
    return [round(float(v), 6) for v in target]


def is_anisotropic(spacing_mm: list[float] | np.ndarray) -> bool:
    """True when the coarsest axis is over ``ANISOTROPY_RATIO`` times the finest."""
    s = np.asarray(spacing_mm, dtype=np.float64)
    return bool(s.max() > ANISOTROPY_RATIO * s.min())
