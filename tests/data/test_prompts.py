"""Prompts: their encoding as input channels, and the simulated user (analytic shapes)."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.data.prompts import (
    PROMPT_CHANNELS,
    Prompts,
    bounding_box,
    corrupt_mask,
    encode_prompts,
    interior_point,
    jittered_box,
    next_click,
    simulate_prompts,
)


def _ball(shape, center, radius) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)) <= radius**2


def test_clicks_boxes_and_the_previous_mask_become_four_channels():
    prev = np.zeros((10, 12, 14), dtype=bool)
    prev[2:4, 3:5, 4:6] = True
    p = Prompts(points=[(5, 6, 7, True), (0, 0, 0, False)], box=(1, 2, 3, 4, 5, 6), previous=prev)
    maps = encode_prompts(p, (10, 12, 14), radius=1)
    assert maps.shape == (len(PROMPT_CHANNELS), 10, 12, 14) and maps.dtype == np.float32
    assert maps[0].sum() == 7 and maps[0, 5, 6, 7] == 1  # a radius-1 ball: centre + 6 neighbours
    assert maps[1].sum() == 4 and maps[1, 0, 0, 0] == 1  # cut by the corner: 1 + 3
    assert maps[2].sum() == 4 * 4 * 4 and maps[2, 1, 2, 3] == maps[2, 4, 5, 6] == 1  # inclusive
    assert np.array_equal(maps[3] > 0, prev)
    empty = encode_prompts(Prompts(), (4, 4, 4))
    assert not empty.any() and Prompts().empty
    # A box reaching past the grid is clipped, a click outside draws nothing.
    outside = encode_prompts(
        Prompts(points=[(50, 50, 50, True)], box=(-3, -3, -3, 1, 1, 1)), (4, 4, 4)
    )
    assert outside[0].sum() == 0 and outside[2].sum() == 8


def test_the_first_click_is_the_centre_then_the_largest_error_with_its_sign():
    target = _ball((30, 30, 30), (15, 15, 15), 8)
    assert interior_point(target) == (15, 15, 15)
    assert next_click(np.zeros_like(target), target) == (15, 15, 15, True)
    assert next_click(target, target) is None
    shown = target.copy()
    shown[15:] = False  # the lower half missed (big), and a small false blob
    shown |= _ball((30, 30, 30), (3, 3, 3), 2)
    z, y, x, positive = next_click(shown, target)
    assert positive and target[z, y, x] and not shown[z, y, x] and z >= 15
    fp = target | _ball((30, 30, 30), (26, 26, 26), 3)
    z, y, x, positive = next_click(fp, target)
    assert not positive and not target[z, y, x] and fp[z, y, x]


def test_simulated_interactions_are_fixed_by_the_seed_and_plausible():
    target = _ball((24, 32, 32), (12, 16, 16), 7)
    kinds = set()
    for seed in range(40):
        a = simulate_prompts(target, np.random.default_rng(seed))
        b = simulate_prompts(target, np.random.default_rng(seed))
        assert (a is None) == (b is None)
        if a is None:
            kinds.add("none")
            continue
        assert a.record() == b.record()
        if a.points:
            z, y, x, positive = a.points[0]
            assert positive == bool(target[z, y, x]) or a.box is not None
        if a.box is not None:
            lo, hi = np.array(a.box[:3]), np.array(a.box[3:])
            assert (lo <= hi).all() and (np.abs(lo - bounding_box(target)[:3]) <= 2).all()
        kinds.add("correct" if a.previous is not None else "box" if a.box else "click")
    assert kinds == {"none", "click", "box", "correct"}


def test_a_corrupted_mask_is_wrong_but_near_the_object():
    target = _ball((24, 32, 32), (12, 16, 16), 7)
    for seed in range(10):
        wrong = corrupt_mask(target, np.random.default_rng(seed))
        dice = 2 * (wrong & target).sum() / (wrong.sum() + target.sum())
        assert 0.3 < dice < 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_jittered_box_stays_in_the_grid_and_near_the_object(seed):
    target = np.zeros((10, 20, 20), dtype=bool)
    target[0:5, 2:18, 5:9] = True
    box = jittered_box(target, np.random.default_rng(seed))
    assert all(0 <= v < s for v, s in zip(box, (10, 20, 20) * 2, strict=True))
    assert box[0] <= 1 and box[3] >= 3
