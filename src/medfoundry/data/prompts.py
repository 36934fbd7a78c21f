"""Prompts for promptable segmentation: what a user gives (clicks, a box, the previous mask), how the
network sees it (extra input channels), and how training and the benchmark simulate a user.

Coordinates are voxel indices ``(z, y, x)`` of the array the prompt is drawn on; a box is inclusive
at both corners, ``(z0, y0, x0, z1, y1, x1)``. The network reads the image channels followed by
:data:`PROMPT_CHANNELS` (early fusion, as nnInteractive: prompts reach every layer, so a click can
change the whole object, at one forward pass per interaction):

- ``positive`` / ``negative``: a ball of :data:`POINT_RADIUS` voxels (value 1) at each click;
- ``box``: 1 inside the box;
- ``previous``: the mask shown before this interaction (1 inside), so a click corrects it.

A simulated user (:func:`simulate_prompts`, training; :func:`next_click`, the benchmark) clicks inside
the object first (its most interior voxel, by the Euclidean distance to its border), then at the
centre of the largest error region of the current mask: positive where the object is missed,
negative where background is marked. Everything random is drawn from one ``numpy`` Generator, so a
batch's prompts are a pure function of its seed (recorded in the batch like augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

PROMPT_CHANNELS = ("positive", "negative", "box", "previous")
POINT_RADIUS = 2
"""Radius of a click's ball, in voxels of the grid the network reads."""


@dataclass
class Prompts:
    """One object's prompts on a ``(Z, Y, X)`` grid."""

    points: list[tuple[int, int, int, bool]] = field(default_factory=list)
    """``(z, y, x, positive)`` clicks."""
    box: tuple[int, int, int, int, int, int] | None = None
    """``(z0, y0, x0, z1, y1, x1)``, inclusive."""
    previous: np.ndarray | None = None
    """``(Z, Y, X)`` bool: the mask before this interaction."""

    def record(self) -> dict:
        """JSON of the clicks and box (the previous mask as its voxel count)."""
        return {
            "points": [[int(z), int(y), int(x), bool(p)] for z, y, x, p in self.points],
            "box": None if self.box is None else [int(v) for v in self.box],
            "previous_voxels": None if self.previous is None else int(self.previous.sum()),
        }

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None and self.previous is None


def encode_prompts(prompts: Prompts, shape_zyx, radius: int = POINT_RADIUS) -> np.ndarray:
    """``(4, Z, Y, X)`` float32 maps of :data:`PROMPT_CHANNELS` for ``prompts`` on a grid of
    ``shape_zyx``; clicks and boxes outside the grid are clipped to it."""
    out = np.zeros((len(PROMPT_CHANNELS), *shape_zyx), dtype=np.float32)
    for z, y, x, positive in prompts.points:
        draw_ball(out[0 if positive else 1], (z, y, x), radius)
    if prompts.box is not None:
        lo = np.clip(prompts.box[:3], 0, np.array(shape_zyx) - 1)
        hi = np.clip(prompts.box[3:], 0, np.array(shape_zyx) - 1)
        out[2, lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = 1.0
    if prompts.previous is not None:
        out[3] = prompts.previous
    return out


def draw_ball(channel: np.ndarray, center, radius: int) -> None:
    """Set the voxels of ``channel`` ``(Z, Y, X)`` within ``radius`` of ``center`` to 1 (in place)."""
    lo = [max(0, int(c) - radius) for c in center]
    hi = [min(s, int(c) + radius + 1) for c, s in zip(center, channel.shape, strict=True)]
    if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):
        return
    grid = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    d2 = sum((g - int(c)) ** 2 for g, c in zip(grid, center, strict=True))
    region = channel[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    region[d2 <= radius * radius] = 1.0


def interior_point(mask: np.ndarray, rng: np.random.Generator | None = None) -> tuple[int, ...]:
    """A voxel of ``mask`` ``(Z, Y, X)`` bool far from its border: the farthest (the benchmark's
    click, ``rng`` None) or a random one at least half as far (training). ``mask`` must not be empty."""
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    if rng is None:
        return tuple(int(v) for v in np.unravel_index(int(np.argmax(dist)), mask.shape))
    candidates = np.argwhere(dist >= 0.5 * dist.max())
    return tuple(int(v) for v in candidates[rng.integers(len(candidates))])


def next_click(
    current: np.ndarray, target: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[int, int, int, bool] | None:
    """The simulated user's next click on ``current`` (the mask shown) for ``target`` (both
    ``(Z, Y, X)`` bool): at the interior point of the largest connected error region, positive if
    it is a missed part of the target, negative if it is a false one; None when they agree."""
    regions = []
    for positive, error in ((True, target & ~current), (False, current & ~target)):
        if not error.any():
            continue
        lab, n = ndimage.label(error)
        sizes = np.bincount(lab.ravel())[1:]
        biggest = int(np.argmax(sizes)) + 1
        regions.append((int(sizes[biggest - 1]), positive, lab == biggest))
    if not regions:
        return None
    _, positive, region = max(regions, key=lambda r: r[0])
    return (*interior_point(region, rng), positive)


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int, int, int]:
    """The inclusive ``(z0, y0, x0, z1, y1, x1)`` box of ``mask`` ``(Z, Y, X)`` (not empty)."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0)
    return (*(int(v) for v in lo), *(int(v) for v in hi))


def jittered_box(mask: np.ndarray, rng: np.random.Generator, jitter: float = 0.1) -> tuple:
    """:func:`bounding_box` with each face moved by up to ``jitter`` of the object's extent (at
    least 1 voxel), kept inside the grid: a user's box is never exact."""
    box = np.array(bounding_box(mask))
    extent = box[3:] - box[:3] + 1
    shift = np.maximum(1, np.round(jitter * extent)).astype(int)
    lo = box[:3] + rng.integers(-shift, shift + 1)
    hi = box[3:] + rng.integers(-shift, shift + 1)
    shape = np.array(mask.shape) - 1
    lo, hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
    return (*(int(v) for v in np.minimum(lo, hi)), *(int(v) for v in np.maximum(lo, hi)))


def corrupt_mask(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong mask for ``target`` ``(Z, Y, X)`` bool, standing for the model's previous
    answer: grown or shrunk by 1-2 voxels, with a ball cut out and/or a false ball added beside it."""
    out = target.copy()
    k = int(rng.integers(1, 3))
    op = rng.integers(3)
    if op == 0:
        out = ndimage.binary_dilation(out, iterations=k)
    elif op == 1:
        out = ndimage.binary_erosion(out, iterations=k)
    radius = max(2, int(round(0.25 * float(np.cbrt(target.sum())))))
    if rng.random() < 0.6:  # a missed part
        _stamp_ball(out, interior_point(target, rng), radius, False)
    if rng.random() < 0.6:  # a false part just outside
        shell = ndimage.binary_dilation(target, iterations=radius) & ~target
        if shell.any():
            _stamp_ball(out, interior_point(shell, rng), radius, True)
    return out


def _stamp_ball(mask: np.ndarray, center, radius: int, value: bool) -> None:
    ball = np.zeros(mask.shape, dtype=np.float32)
    draw_ball(ball, center, radius)
    mask[ball > 0] = value


@dataclass(frozen=True)
class PromptMix:
    """How often each kind of simulated interaction is drawn for a training sample (the rest,
    ``1 - click - box - correct``, trains the automatic mode: no prompt)."""

    click: float = 0.3
    """One positive click inside the object, nothing shown before."""
    box: float = 0.15
    """A jittered box, nothing shown before."""
    correct: float = 0.35
    """A wrong previous mask, the first click (or a box), and 1-4 clicks on its largest errors."""
    max_corrections: int = 4


def simulate_prompts(
    target: np.ndarray, rng: np.random.Generator, mix: PromptMix = PromptMix()
) -> Prompts | None:
    """A simulated interaction for the object ``target`` ``(Z, Y, X)`` bool (not empty), or None
    (no prompt: the sample trains the automatic mode)."""
    u = rng.random()
    if u < mix.click:
        return Prompts(points=[(*interior_point(target, rng), True)])
    if u < mix.click + mix.box:
        return Prompts(box=jittered_box(target, rng))
    if u >= mix.click + mix.box + mix.correct:
        return None
    previous = corrupt_mask(target, rng)
    prompts = Prompts(previous=previous)
    if rng.random() < 0.3:
        prompts.box = jittered_box(target, rng)
    else:
        prompts.points.append((*interior_point(target, rng), True))
    shown = previous.copy()
    for _ in range(int(rng.integers(1, mix.max_corrections + 1))):
        click = next_click(shown, target, rng)
        if click is None:
            break
        prompts.points.append(click)
        _stamp_ball(shown, click[:3], POINT_RADIUS, click[3])  # that error region is handled
    return prompts
