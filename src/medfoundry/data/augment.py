"""nnU-Net-style augmentation, applied: :func:`apply_params` carries out the parameters that
:func:`medfoundry.data.augment_config.sample_params` drew (a plain dict that can be logged and
replayed), so a batch is reproducible.

Image patches are ``(C, Z, Y, X)`` float32 tensors, labels ``(Z, Y, X)`` integer tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
