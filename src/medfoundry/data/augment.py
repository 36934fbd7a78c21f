"""nnU-Net-style augmentation. Random parameters are sampled first (:func:`sample_params`, a plain dict
that can be logged and replayed) and then applied (:func:`apply_params`), so a batch is reproducible.

Image patches are ``(C, Z, Y, X)`` float32 tensors, labels ``(Z, Y, X)`` integer tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


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


def apply_params(
    params: dict, image: torch.Tensor, label: torch.Tensor, out_size
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply sampled parameters; ``image``/``label`` may be a larger region centred on the patch,
    the result is the centred ``out_size`` (Z, Y, X) patch."""
    image, label = _spatial(params, image, label, out_size)
    if "noise_std" in params:
        g = torch.Generator().manual_seed(params["noise_seed"])
        image = image + torch.randn(image.shape, generator=g) * params["noise_std"]
    if "blur_sigma" in params:
        image = _blur(image, params["blur_sigma"])
    if "brightness" in params:
        image = image * params["brightness"]
    if "contrast" in params:
        mean = image.mean(dim=(1, 2, 3), keepdim=True)
        lo, hi = image.amin(dim=(1, 2, 3), keepdim=True), image.amax(dim=(1, 2, 3), keepdim=True)
        image = ((image - mean) * params["contrast"] + mean).clamp(lo, hi)
    if "lowres_zoom" in params:
        z = params["lowres_zoom"]
        zoom = [1.0 if params.get("in_plane") else z, z, z]
        small = [max(1, int(round(s * z))) for s, z in zip(image.shape[1:], zoom, strict=True)]
        down = F.interpolate(image[None], size=small, mode="nearest")
        image = F.interpolate(
            down, size=tuple(image.shape[1:]), mode="trilinear", align_corners=False
        )[0]
    if "gamma" in params:
        image = _gamma(image, params["gamma"], params["gamma_invert"])
    if "mirror_axes" in params:
        axes = [a + 1 for a in params["mirror_axes"]]
        image = torch.flip(image, axes)
        label = torch.flip(label, [a - 1 for a in axes])
    return image.contiguous(), label.contiguous()


def _spatial(params, image, label, out_size):
    """Rotate/scale about the region centre with one affine resampling, then take the centred patch."""
    if "rotation_rad" not in params and "scale" not in params:
        return _center_crop(image, out_size), _center_crop(label, out_size)
    rz, ry, rx = params.get("rotation_rad", [0.0, 0.0, 0.0])
    rot = _rot(rx, 0) @ _rot(ry, 1) @ _rot(rz, 2)
    in_size = torch.tensor(image.shape[1:], dtype=torch.float64)
    out = torch.tensor(out_size, dtype=torch.float64)
    # grid_sample works in normalised (x, y, z) coords; rotate in voxel units:
    # input_norm = diag(1 / in) @ R @ diag(out / scale) @ output_norm (in-plane: z not scaled).
    scale = torch.full((3,), params.get("scale", 1.0), dtype=torch.float64)
    if params.get("in_plane"):
        scale[2] = 1.0
    theta = torch.zeros(1, 3, 4, dtype=torch.float64)
    theta[0, :, :3] = torch.diag(1 / in_size.flip(0)) @ rot @ torch.diag(out.flip(0) / scale)
    grid = F.affine_grid(theta.float(), [1, 1, *out_size], align_corners=False)
    img = F.grid_sample(
        image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]
    lab = F.grid_sample(
        label[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[0, 0]
    return img, lab.to(label.dtype)


def _rot(angle: float, axis: int) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    m = torch.eye(3, dtype=torch.float64)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _center_crop(x: torch.Tensor, size) -> torch.Tensor:
    sl = [slice((s - o) // 2, (s - o) // 2 + o) for s, o in zip(x.shape[-3:], size, strict=True)]
    return x[(..., *sl)]


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = image[:, None]  # (C, 1, Z, Y, X): channels blurred independently
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), k.view(shape))
    return x[:, 0]


def _gamma(image: torch.Tensor, gamma: float, invert: bool) -> torch.Tensor:
    x = -image if invert else image
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    rng = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-7)
    mean, std = x.mean(dim=(1, 2, 3), keepdim=True), x.std(dim=(1, 2, 3), keepdim=True)
    y = ((x - lo) / rng).pow(gamma) * rng + lo
    y = (y - y.mean(dim=(1, 2, 3), keepdim=True)) / y.std(dim=(1, 2, 3), keepdim=True).clamp_min(
        1e-7
    ) * std + mean
    return -y if invert else y
