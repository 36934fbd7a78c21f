"""An abdominal phantom: body, fat, muscle, spine, aorta, liver (with lesions), spleen, kidneys,
gallbladder, as smooth randomly deformed ellipsoids in millimetre coordinates.

One anatomy, two imaging models: CT (Hounsfield-like units, int16) and MR (T1-like arbitrary units
with a smooth bias field). Partial-volume blur and noise are applied after the intensities. Arrays are
``(Z, Y, X)``; spacing is ``(Z, Y, X)`` mm; world x is the patient's left, y posterior, z cranial (LPS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

STRUCTURES = ("liver", "spleen", "kidney", "liver_lesion", "gallbladder", "spine", "aorta")
FOV_MM = (160.0, 280.0, 360.0)
"""Field of view (Z, Y, X) in mm."""

# Mean intensity per tissue: CT in HU (portal-venous contrast phase), MR in arbitrary T1-like units.
_TISSUE = {
    "air": (-1000.0, 0.0),
    "fat": (-100.0, 420.0),
    "muscle": (50.0, 140.0),
    "liver": (105.0, 260.0),
    "spleen": (120.0, 190.0),
    "kidney": (170.0, 210.0),
    "liver_lesion": (45.0, 120.0),
    "gallbladder": (5.0, 50.0),
    "spine": (550.0, 90.0),
    "aorta": (180.0, 160.0),
}


@dataclass
class Phantom:
    image: np.ndarray
    """``(Z, Y, X)`` float32 intensities."""
    masks: dict[str, np.ndarray]
    """Structure name -> ``(Z, Y, X)`` bool mask (lesions are inside the liver mask too)."""
    spacing_mm: tuple[float, float, float]


def make_phantom(
    rng: np.random.Generator, modality: str, spacing_mm, lesion_probability: float = 0.6
) -> Phantom:
    """One random phantom volume of ``modality`` ``"CT"`` or ``"MR"`` at ``spacing_mm`` (Z, Y, X)."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    shape = tuple(int(round(f / s)) for f, s in zip(FOV_MM, spacing, strict=True))
    zz, yy, xx = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    grid = np.meshgrid(zz, yy, xx, indexing="ij")
    scale = rng.uniform(0.9, 1.1)  # patient size

    def blob(center_zyx, radii_zyx, wobble=0.15):
        c = np.asarray(center_zyx) * scale + rng.normal(0, 6, 3)
        r = np.asarray(radii_zyx) * scale * rng.uniform(0.85, 1.15, 3)
        d = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r, strict=True))
        return d + wobble * _smooth_field(rng, shape) < 1.0

    body = (grid[1] / (115 * scale)) ** 2 + (grid[2] / (160 * scale)) ** 2 < 1.0
    inner = (grid[1] / (100 * scale)) ** 2 + (
        grid[2] / (145 * scale)
    ) ** 2 < 1.0  # inside subcutaneous fat
    masks = {
        "liver": blob((25, -15, -65), (55, 60, 75)) & inner,
        "spleen": blob((35, 40, 85), (40, 38, 28)) & inner,
        "kidney": (blob((-20, 55, -60), (45, 30, 25)) | blob((-25, 55, 60), (45, 30, 25))) & inner,
        "gallbladder": blob((-15, -45, -40), (28, 14, 14), 0.1) & inner,
        "spine": ((grid[1] - 70 * scale) / 20) ** 2 + (grid[2] / 20) ** 2 < 1.0,
        "aorta": ((grid[1] - 42 * scale) / 10) ** 2 + ((grid[2] - 15) / 10) ** 2 < 1.0,
    }
    masks["gallbladder"] &= ~masks["liver"] | blob((-15, -45, -40), (22, 11, 11), 0.0)
    masks["liver"] &= ~masks["gallbladder"]
    masks["liver_lesion"] = _lesions(rng, masks["liver"], grid, lesion_probability)

    col = 0 if modality.upper() == "CT" else 1
    image = np.full(shape, _TISSUE["air"][col], dtype=np.float32)
    image[body] = _TISSUE["fat"][col]
    image[inner] = _TISSUE["muscle"][col]
    for name in ("liver", "spleen", "kidney", "gallbladder", "spine", "aorta", "liver_lesion"):
        image[masks[name]] = _TISSUE[name][col] * rng.uniform(0.95, 1.05)
    return Phantom(
        _imaging(rng, image, body, modality, spacing), masks, tuple(float(s) for s in spacing)
    )


def _lesions(rng, liver, grid, probability) -> np.ndarray:
    lesion = np.zeros(liver.shape, dtype=bool)
    if rng.random() > probability or not liver.any():
        return lesion
    idx = np.flatnonzero(liver.ravel())
    for _ in range(rng.integers(1, 4)):
        center = [g.ravel()[rng.choice(idx)] for g in grid]
        radius = rng.uniform(6, 16)
        d = sum((g - c) ** 2 for g, c in zip(grid, center, strict=True))
        lesion |= (d < radius**2) & liver
    return lesion


def _imaging(rng, image, body, modality, spacing) -> np.ndarray:
    """Partial-volume blur (a ~1.5 mm Gaussian), then modality noise (and bias field for MR)."""
    blurred = ndimage.gaussian_filter(image, sigma=1.5 / spacing)
    if modality.upper() == "CT":
        return (blurred + rng.normal(0, 12, image.shape)).astype(np.float32)
    bias = np.exp(0.25 * _smooth_field(rng, image.shape))
    noisy = blurred * bias
    noise = rng.normal(0, 8, (2, *image.shape))
    return np.sqrt((noisy + noise[0]) ** 2 + noise[1] ** 2).astype(np.float32)  # Rician magnitude


def _smooth_field(rng, shape) -> np.ndarray:
    """A smooth random field in about [-1, 1]: 4x4x4 noise upsampled with cubic splines."""
    coarse = rng.uniform(-1, 1, (4, 4, 4))
    return ndimage.zoom(coarse, [s / 4 for s in shape], order=3, mode="nearest")[
        : shape[0], : shape[1], : shape[2]
    ]
