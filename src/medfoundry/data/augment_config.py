"""What augmentation does, without doing it (numpy only, no torch): the settings
(:class:`AugmentConfig`, a section of the training config) and the random parameters of one sample
(:func:`sample_params`), drawn first so they can be recorded and replayed; :mod:`.augment` applies them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class AugmentConfig:
    """Each transform has a probability per sample (nnU-Net's defaults) and a parameter range."""

    enabled: bool = True
    rotation_p: float = 0.2
    rotation_deg: float = 30.0
    """Rotation about each axis, uniform in +-rotation_deg."""
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    noise_p: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_p: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_p: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    lowres_p: float = 0.25
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    gamma_p: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    mirror_p: float = 0.5
    """Probability of flipping each of the mirror axes."""
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    """Spatial axes (0=Z, 1=Y, 2=X) that may be flipped."""
    flat_ratio: float = 3.0
    """A patch whose largest axis is over this many times its Z size is flat (thick-slice data). As in
    nnU-Net ("dummy 2D" augmentation), a flat patch is rotated only in-plane (about Z, within
    +-flat_rotation_deg), and scaling and simulated low resolution leave Z alone."""
    flat_rotation_deg: float = 180.0


AUGMENT_RANGES = {
    **{f"{t}_p": "[0, 1]" for t in ("rotation", "scale", "noise", "blur", "brightness")},
    **{f"{t}_p": "[0, 1]" for t in ("contrast", "lowres", "gamma", "mirror")},
    "rotation_deg": "[0, 180]",
    "scale_range": "(0, inf)",
    "noise_variance": "[0, inf)",
    "blur_sigma": "[0, inf)",
    "brightness_range": "(0, inf)",
    "contrast_range": "(0, inf)",
    "lowres_zoom": "(0, 1]",
    "gamma_range": "(0, inf)",
    "mirror_axes": "[0, 2]",
    "flat_ratio": "(0, inf)",
    "flat_rotation_deg": "[0, 180]",
}
"""Allowed values of :class:`AugmentConfig` (probabilities in [0, 1], ranges low <= high)."""


def is_flat(cfg: AugmentConfig, patch_size) -> bool:
    """True when ``patch_size`` (Z, Y, X) gets in-plane (2D) spatial augmentation."""
    return max(patch_size) > cfg.flat_ratio * patch_size[0]


def spatial_region(cfg: AugmentConfig, patch_size) -> list[int]:
    """Size (Z, Y, X) of the region read around a patch so that rotation/scaling never reach past it."""
    if not cfg.enabled or (cfg.rotation_p == 0 and cfg.scale_p == 0):
        return list(patch_size)
    flat = is_flat(cfg, patch_size)
    turn = (math.sqrt(2) if flat else math.sqrt(3)) if cfg.rotation_p else 1.0
    margin = max(1.0, turn * cfg.scale_range[1])
    return [
        int(p) if flat and a == 0 else int(math.ceil(p * margin)) for a, p in enumerate(patch_size)
    ]


def sample_params(cfg: AugmentConfig, rng: np.random.Generator, flat: bool = False) -> dict:
    """Draw every random decision and value for one sample (``flat``: see :func:`is_flat`)."""
    if not cfg.enabled:
        return {}
    u = lambda lo_hi: float(rng.uniform(*lo_hi))  # noqa: E731
    p = {"in_plane": True} if flat else {}
    if rng.random() < cfg.rotation_p:
        limits = [cfg.flat_rotation_deg, 0.0, 0.0] if flat else 3 * [cfg.rotation_deg]  # Z, Y, X
        p["rotation_rad"] = [float(rng.uniform(-1, 1) * math.radians(d)) for d in limits]
    if rng.random() < cfg.scale_p:
        p["scale"] = u(cfg.scale_range)
    if rng.random() < cfg.noise_p:
        p["noise_std"] = math.sqrt(u(cfg.noise_variance))
        p["noise_seed"] = int(rng.integers(2**31))
    if rng.random() < cfg.blur_p:
        p["blur_sigma"] = u(cfg.blur_sigma)
    if rng.random() < cfg.brightness_p:
        p["brightness"] = u(cfg.brightness_range)
    if rng.random() < cfg.contrast_p:
        p["contrast"] = u(cfg.contrast_range)
    if rng.random() < cfg.lowres_p:
        p["lowres_zoom"] = u(cfg.lowres_zoom)
    if rng.random() < cfg.gamma_p:
        p["gamma"] = u(cfg.gamma_range)
        p["gamma_invert"] = bool(rng.random() < 0.15)
    flips = [a for a in cfg.mirror_axes if rng.random() < cfg.mirror_p]
    if flips:
        p["mirror_axes"] = flips
    return p
