"""The one in-memory volume type.

Axis contract (the single place it is written down):

* ``Volume.array`` has shape ``(C, Z, Y, X)``: channel first, then the slowest-varying voxel index
  ``k`` (Z), then ``j`` (Y), then the fastest ``i`` (X). This is SimpleITK's/nnU-Net's order; NIfTI
  files store ``(i, j, k)`` and are transposed on read and write.
* ``spacing_mm``, ``origin_mm`` and the rows/columns of ``direction`` are given in the same
  ``(Z, Y, X)`` voxel-axis order: ``spacing_mm[0]`` is the distance between slices.
* World coordinates are LPS (DICOM/ITK convention) in millimetres. ``direction[:, a]`` is the unit
  vector, in world ``(x, y, z)`` LPS order, along array axis ``a`` (Z, Y, X). ``origin_mm`` is the world
  LPS position ``(x, y, z)`` of voxel ``(0, 0, 0)``.

So the world position of voxel index ``(z, y, x)`` is ``origin_mm + direction @ (spacing_mm * (z, y, x))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

AXES = ("C", "Z", "Y", "X")


@dataclass
class Volume:
    """An image or label map with its geometry.

    Attributes:
        array: ``(C, Z, Y, X)`` voxel data; a label map has ``C == 1``.
        spacing_mm: ``(3,)`` voxel size along (Z, Y, X) in mm.
        origin_mm: ``(3,)`` world LPS position (x, y, z) of voxel (0, 0, 0) in mm.
        direction: ``(3, 3)``; column ``a`` is the LPS unit vector of array axis ``a`` (Z, Y, X).
        meta: format-specific header kept so writers reproduce the source file exactly
            (e.g. ``{"nifti_header": nibabel header}``). Not serialised.
    """

    array: np.ndarray
    spacing_mm: np.ndarray
    origin_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))
    direction: np.ndarray = field(default_factory=lambda: _default_direction())
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 4:
            raise ValueError(f"Volume.array must be (C, Z, Y, X), got shape {self.array.shape}")
        self.spacing_mm = np.asarray(self.spacing_mm, dtype=np.float64).reshape(3)
        self.origin_mm = np.asarray(self.origin_mm, dtype=np.float64).reshape(3)
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        return int(self.array.shape[0])

    def geometry(self) -> dict[str, list]:
        """Plain-JSON geometry: shape (Z, Y, X), spacing, origin, direction."""
        return {
            "shape_zyx": list(self.shape_zyx),
            "spacing_mm": [float(v) for v in self.spacing_mm],
            "origin_mm": [float(v) for v in self.origin_mm],
            "direction": [[float(v) for v in row] for row in self.direction],
        }

    def same_geometry(self, other: Volume, tol: float = 1e-4) -> bool:
        """True when shape, spacing, origin and direction agree (spacing/origin within ``tol`` mm)."""
        return (
            self.shape_zyx == other.shape_zyx
            and np.allclose(self.spacing_mm, other.spacing_mm, atol=tol, rtol=0)
            and np.allclose(self.origin_mm, other.origin_mm, atol=tol, rtol=0)
            and np.allclose(self.direction, other.direction, atol=tol, rtol=0)
        )

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume with the same geometry and header but other voxel data."""
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction, dict(self.meta))


def _default_direction() -> np.ndarray:
    # Array axes (Z, Y, X) along world (z, y, x): columns are e_z, e_y, e_x.
    return np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
