"""Sliding-window inference: tiles placed with a step of ``step_fraction`` x patch, logits accumulated with
a Gaussian weight that trusts tile centres more than borders. Pure helpers plus one loop."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medfoundry.utils.device import autocast_for


def compute_gaussian(patch_zyx, sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """``(Z, Y, X)`` float32 weights: a Gaussian centred on the patch, sigma = ``sigma_scale`` x size,
    scaled to max 1, with zeros replaced by the smallest positive value (every voxel gets some weight)."""
    axes = []
    for n in patch_zyx:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        axes.append(np.exp(-(x**2) / (2 * (sigma_scale * n) ** 2)))
    g = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    g = (g / g.max()).astype(np.float32)
    g[g == 0] = g[g > 0].min()
    return g


def compute_steps(image_zyx, patch_zyx, step_fraction: float = 0.5) -> list[list[int]]:
    """Tile start positions per axis: the fewest evenly spaced tiles with step <= step_fraction x patch
    that cover the image (image size >= patch size on every axis); ``step_fraction`` in (0, 1]."""
    check_step_fraction(step_fraction)
    steps = []
    for size, patch in zip(image_zyx, patch_zyx, strict=True):
        if size < patch:
            raise ValueError(f"image size {size} < patch size {patch}: pad first")
        n = int(np.ceil((size - patch) / (patch * step_fraction))) + 1
        span = size - patch
        steps.append([int(round(i * span / (n - 1))) if n > 1 else 0 for i in range(n)])
    return steps


def check_step_fraction(step_fraction: float) -> None:
    """Raise ``ValueError`` unless the tile step (a fraction of the patch) is in (0, 1]: 0 places no
    tile after the first, above 1 leaves gaps between tiles."""
    if not 0 < step_fraction <= 1:  # also refuses NaN
        raise ValueError(f"step_fraction must be in (0, 1], got {step_fraction}")


def count_tiles(image_zyx, patch_zyx, step_fraction: float = 0.5) -> int:
    """Tiles one sliding-window pass places over an image ``(Z, Y, X)`` (padded up to the patch)."""
    padded = [max(s, p) for s, p in zip(image_zyx, patch_zyx, strict=True)]
    return int(np.prod([len(s) for s in compute_steps(padded, patch_zyx, step_fraction)]))


@torch.no_grad()
def predict_sliding_window(
    model,
    image: torch.Tensor,
    patch_zyx,
    step_fraction: float = 0.5,
    tiles_per_batch: int = 1,
    amp: bool = False,
    progress: bool | str = False,
) -> torch.Tensor:
    """Logits ``(K, Z, Y, X)`` for an image ``(C, Z, Y, X)`` (on the model's device).

    Images smaller than the patch are zero-padded symmetrically and the padding removed from the result.
    ``progress``: a progress bar over tiles (a string: its label).
    """
    device = next(model.parameters()).device
    image = image.to(device)
    pads = [max(0, p - s) for s, p in zip(image.shape[1:], patch_zyx, strict=True)]
    pad_arg = []
    for p in reversed(pads):
        pad_arg += [p // 2, p - p // 2]
    padded = F.pad(image, pad_arg) if any(pads) else image
    shape = padded.shape[1:]
    gauss = torch.from_numpy(compute_gaussian(patch_zyx)).to(device)
    logits = None
    weight = torch.zeros(shape, device=device)
    steps_z, steps_y, steps_x = compute_steps(shape, patch_zyx, step_fraction)
    starts = [(z, y, x) for z in steps_z for y in steps_y for x in steps_x]
    bar = tqdm(
        total=len(starts),
        desc=progress if isinstance(progress, str) else "tiles",
        unit="tile",
        leave=False,
        disable=not progress,
    )
    for i in range(0, len(starts), tiles_per_batch):
        chunk = starts[i : i + tiles_per_batch]
        tiles = torch.stack(
            [
                padded[:, z : z + patch_zyx[0], y : y + patch_zyx[1], x : x + patch_zyx[2]]
                for z, y, x in chunk
            ]
        )
        with autocast_for(device, amp):
            out = model(tiles)
        out = out[0] if isinstance(out, list | tuple) else out
        if logits is None:
            logits = torch.zeros((out.shape[1], *shape), device=device)
        for (z, y, x), tile in zip(chunk, out, strict=True):
            sl = (
                slice(z, z + patch_zyx[0]),
                slice(y, y + patch_zyx[1]),
                slice(x, x + patch_zyx[2]),
            )
            logits[(slice(None), *sl)] += tile.float() * gauss
            weight[sl] += gauss
        bar.update(len(chunk))
    bar.close()
    logits /= weight
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pads, image.shape[1:], strict=True))
    return logits[(slice(None), *crop)]
