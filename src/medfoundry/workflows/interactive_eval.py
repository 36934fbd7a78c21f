"""The interactive protocol on one case and structure: a simulated user clicks, the model answers.

The user (:func:`medfoundry.data.prompts.next_click`, deterministic) clicks first at the most interior
voxel of the structure, then at the centre of the largest error region of the mask shown, positive on
a missed part, negative on a false one, up to ``clicks`` times; Dice against the reference after
each click, all at the input grid. A box is the structure's exact bounding box. The classical
baseline (:func:`region_grow`) gets its own simulated user on its own masks, from the same rules.
NoC@t (number of clicks to reach Dice t) is ``clicks + 1`` when never reached within ``clicks``.
"""

from __future__ import annotations

import time

import numpy as np

from medfoundry.data.prompts import bounding_box, next_click
from medfoundry.evaluation.metrics import dice_score
from medfoundry.inference.interactive import InteractiveSession

CLICK_COUNTS = (1, 2, 3, 5, 10)
GROW_MULTIPLIER = 2.5
"""SimpleITK ConfidenceConnected: intensities within this many standard deviations of the seeds'."""


def click_curve(session: InteractiveSession, target: np.ndarray, clicks: int) -> dict:
    """Dice after each of ``clicks`` simulated clicks on the session's volume for ``target``
    ``(Z, Y, X)`` bool (input grid), the seconds each click took, and the clicks themselves."""
    session.new_object()
    shown = np.zeros_like(target)
    dices, seconds, record = [], [], []
    for _ in range(clicks):
        click = next_click(shown, target)
        if click is None:  # perfect: later clicks change nothing
            dices.append(1.0)
            continue
        start = time.perf_counter()
        shown = session.add_point(click[:3], click[3])
        seconds.append(time.perf_counter() - start)
        dices.append(dice_score(shown, target))
        record.append([*click[:3], bool(click[3])])
    return {"dice": dices, "seconds": seconds, "clicks": record}


def box_dice(session: InteractiveSession, target: np.ndarray) -> tuple[float, float]:
    """Dice from the structure's bounding box alone, and the seconds it took."""
    session.new_object()
    start = time.perf_counter()
    mask = session.add_box(bounding_box(target))
    return dice_score(mask, target), time.perf_counter() - start


def region_grow(image_zyx: np.ndarray, points: list) -> np.ndarray:
    """The classical baseline: SimpleITK ConfidenceConnected region growing from the positive
    clicks ``(z, y, x, positive)`` on ``image_zyx`` ``(Z, Y, X)``; a negative click inside the
    region makes the rule stricter (the multiplier halved, down to 0.3) until it falls outside."""
    import SimpleITK as sitk

    seeds = [(int(x), int(y), int(z)) for z, y, x, p in points if p]  # ITK index order: x, y, z
    negatives = [(z, y, x) for z, y, x, p in points if not p]
    if not seeds:
        return np.zeros(image_zyx.shape, dtype=bool)
    image = sitk.GetImageFromArray(np.ascontiguousarray(image_zyx, dtype=np.float32))
    multiplier = GROW_MULTIPLIER
    while True:
        grown = sitk.ConfidenceConnected(
            image,
            seedList=seeds,
            numberOfIterations=2,
            multiplier=multiplier,
            initialNeighborhoodRadius=1,
            replaceValue=1,
        )
        mask = sitk.GetArrayFromImage(grown).astype(bool)
        if multiplier <= 0.3 or not any(mask[n] for n in negatives):
            return mask
        multiplier /= 2


def baseline_curve(image_zyx: np.ndarray, target: np.ndarray, clicks: int) -> list[float]:
    """Dice of :func:`region_grow` after each of ``clicks`` clicks of its own simulated user."""
    shown = np.zeros_like(target)
    points, dices = [], []
    for _ in range(clicks):
        click = next_click(shown, target)
        if click is None:
            dices.append(1.0)
            continue
        points.append(click)
        shown = region_grow(image_zyx, points)
        dices.append(dice_score(shown, target))
    return dices


def clicks_to_reach(dices: list[float], threshold: float) -> int:
    """NoC: the first click count whose Dice is >= ``threshold`` (``len(dices) + 1`` if none)."""
    return next((k + 1 for k, d in enumerate(dices) if d >= threshold), len(dices) + 1)
