"""Resampling between spacings: cubic images, one-hot linear label maps. Pure functions.

Arrays are ``(C, Z, Y, X)`` images or ``(Z, Y, X)`` label maps; spacings are ``(Z, Y, X)`` mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medfoundry.planning.spacing import is_anisotropic


def resampled_shape(shape_zyx, spacing_mm, target_spacing_mm) -> list[int]:
    """Voxel shape covering the same extent at the target spacing (at least 1 voxel per axis)."""
    shape = (
        np.asarray(shape_zyx, dtype=np.float64)
        * np.asarray(spacing_mm)
        / np.asarray(target_spacing_mm)
    )
    return [max(1, int(round(v))) for v in shape]


def needs_resampling(shape_zyx, spacing_mm, target_spacing_mm) -> bool:
    return list(shape_zyx) != resampled_shape(
        shape_zyx, spacing_mm, target_spacing_mm
    ) or not np.allclose(spacing_mm, target_spacing_mm, rtol=1e-3, atol=0)


def resample_image(
    image_czyx: np.ndarray, new_shape_zyx, thick_axis: int | None = None
) -> np.ndarray:
    """Resample each channel to ``new_shape_zyx`` with cubic splines (float32 out).

    With ``thick_axis`` (the slice axis of anisotropic data) the in-plane axes are cubic and the
    thick axis linear, so no ringing is invented between distant slices.
    """
    out = np.empty((image_czyx.shape[0], *new_shape_zyx), dtype=np.float32)
    for c, channel in enumerate(image_czyx):
        out[c] = _zoom(channel.astype(np.float32, copy=False), new_shape_zyx, 3, thick_axis)
    return out


def resample_label(
    label_zyx: np.ndarray, new_shape_zyx, thick_axis: int | None = None
) -> np.ndarray:
    """Resample a label map: each class as a linear-interpolated one-hot channel, then argmax.

    Memory stays at two float32 volumes whatever the number of classes (running maximum).
    """
    values = np.unique(label_zyx)
    best = np.full(tuple(new_shape_zyx), -1.0, dtype=np.float32)
    out = np.zeros(tuple(new_shape_zyx), dtype=label_zyx.dtype)
    for v in values:
        score = _zoom((label_zyx == v).astype(np.float32), new_shape_zyx, 1, thick_axis)
        take = score > best
        best[take] = score[take]
        out[take] = v
    return out


def thick_axis_of(spacing_mm) -> int | None:
    """The slice axis of anisotropic spacing, else None."""
    return int(np.argmax(spacing_mm)) if is_anisotropic(spacing_mm) else None


def _zoom(vol_zyx: np.ndarray, new_shape, order: int, thick_axis: int | None) -> np.ndarray:
    factors = [n / o for n, o in zip(new_shape, vol_zyx.shape, strict=True)]
    if thick_axis is None or order <= 1:
        return _exact(
            ndimage.zoom(vol_zyx, factors, order=order, mode="nearest", prefilter=order > 1),
            new_shape,
        )
    in_plane = [1.0 if a == thick_axis else f for a, f in enumerate(factors)]
    along = [factors[a] if a == thick_axis else 1.0 for a in range(3)]
    tmp = ndimage.zoom(vol_zyx, in_plane, order=order, mode="nearest")
    return _exact(ndimage.zoom(tmp, along, order=1, mode="nearest"), new_shape)


def _exact(vol: np.ndarray, shape) -> np.ndarray:
    """Guard against scipy's rounding of the output shape (pad by edge or crop by one voxel)."""
    if tuple(vol.shape) == tuple(shape):
        return vol
    pads = [(0, max(0, s - v)) for s, v in zip(shape, vol.shape, strict=True)]
    vol = np.pad(vol, pads, mode="edge")
    return vol[tuple(slice(0, s) for s in shape)]


def resample_linear(vol_zyx: np.ndarray, new_shape_zyx) -> np.ndarray:
    """One ``(Z, Y, X)`` float map resampled linearly to ``new_shape_zyx`` (float32)."""
    return _zoom(np.asarray(vol_zyx, np.float32), new_shape_zyx, 1, None)
