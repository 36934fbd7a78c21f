"""The interactive protocol (simulated user, NoC, region growing) and the benchmark on real data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medfoundry import MedfoundryError
from medfoundry.data.prompts import draw_ball
from medfoundry.evaluation.metrics import dice_score
from medfoundry.workflows.interactive_benchmark import parse_structure, run_interactive_benchmark
from medfoundry.workflows.interactive_eval import (
    baseline_curve,
    click_curve,
    clicks_to_reach,
    region_grow,
)


def _sphere_scene(seed: int = 0):
    """A bright ball (radius 8) and a dimmer touching blob in noise: (image, ball mask)."""
    rng = np.random.default_rng(seed)
    grid = np.ogrid[:32, :40, :40]
    ball = sum((g - c) ** 2 for g, c in zip(grid, (16, 20, 20), strict=True)) <= 64
    image = rng.normal(0, 0.3, (32, 40, 40)).astype(np.float32)
    image[ball] += 5.0
    return image, ball


class BallUser:
    """A stand-in session whose answer is balls of radius 4 at the positive clicks minus balls at
    the negative ones (what a model that only follows clicks would do)."""

    def __init__(self, shape):
        self.shape = shape

    def new_object(self):
        self.pos = np.zeros(self.shape, np.float32)
        self.neg = np.zeros(self.shape, np.float32)

    def add_point(self, zyx, positive=True):
        draw_ball(self.pos if positive else self.neg, zyx, 4)
        return (self.pos > 0) & ~(self.neg > 0)


def test_the_simulated_user_improves_a_click_follower_and_counts_clicks():
    _, ball = _sphere_scene()
    curve = click_curve(BallUser(ball.shape), ball, 10)
    assert len(curve["dice"]) == 10 and len(curve["seconds"]) == len(curve["clicks"])
    assert curve["clicks"][0] == [16, 20, 20, True]  # the centre first
    assert curve["dice"][-1] > curve["dice"][0] > 0
    assert all(c[3] for c in curve["clicks"])  # it never oversegments: only positive clicks
    assert clicks_to_reach([0.5, 0.86, 0.91], 0.85) == 2
    assert clicks_to_reach([0.5, 0.86, 0.91], 0.90) == 3
    assert clicks_to_reach([0.5, 0.6], 0.9) == 3  # never: clicks + 1


def test_region_growing_finds_a_bright_ball_from_one_click_and_obeys_negatives():
    image, ball = _sphere_scene()
    grown = region_grow(image, [(16, 20, 20, True)])
    assert dice_score(grown, ball) > 0.95
    assert not region_grow(image, [(16, 20, 20, False)]).any()  # no positive seed
    curve = baseline_curve(image, ball, 3)
    assert curve[0] > 0.95 and len(curve) == 3
    # Two regions of different brightness joined: a negative click in one tightens the rule.
    image2 = image.copy()
    blob = np.zeros_like(ball)
    blob[16:24, 28:36, 14:26] = True
    image2[blob & ~ball] += 4.5
    loose = region_grow(image2, [(16, 20, 20, True)])
    strict = region_grow(image2, [(16, 20, 20, True), (20, 32, 20, False)])
    assert loose[20, 32, 20] and not strict[20, 32, 20]
    assert strict.sum() < loose.sum()  # a stricter rule: (here) less of the ball too


def test_structures_parse_with_one_line_errors():
    assert parse_structure("hippocampus=1,2") == ("hippocampus", [1, 2])
    for bad in ("liver", "=1", "liver=x", "liver=0"):
        with pytest.raises(MedfoundryError, match="NAME=ID"):
            parse_structure(bad)


def test_the_benchmark_on_real_hippocampus_cases(promptable_run, hippo_dir, tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for f in sorted((hippo_dir / "labelsTr").glob("*.nii.gz"))[-2:]:
        (images / f.name).symlink_to(hippo_dir / "imagesTr" / f.name)
        (labels / f.name).symlink_to(f)
    structures = {"hippocampus_anterior": [1], "whole hippocampus": [1, 2]}
    out = tmp_path / "bench"
    rows = run_interactive_benchmark(
        promptable_run, images, labels, structures, out, clicks=3, progress=False
    )
    assert len(rows) == 4 and {r["structure"] for r in rows} == set(structures)
    seen = {r["structure"]: r["seen"] for r in rows}
    assert seen == {"hippocampus_anterior": True, "whole hippocampus": False}
    for r in rows:
        assert len(r["curve"]) == 3 and all(0 <= d <= 1 for d in r["curve"])
        assert r["noc85"] in range(1, 5) and r["click_s_median"] > 0
        assert (r["auto"] is not None) == r["seen"]
    table = list(csv.DictReader((out / "table.csv").read_text().splitlines()))
    assert [t["structure"] for t in table] == list(structures)
    assert "| hippocampus_anterior | yes | 2 |" in (out / "table.md").read_text()
    assert (out / "clicks.png").stat().st_size > 0
    # A second run keeps the finished cases.
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cases").iterdir()}
    again = run_interactive_benchmark(
        promptable_run, images, labels, structures, out, clicks=3, progress=False
    )
    assert again == rows
    assert before == {p.name: p.stat().st_mtime_ns for p in (out / "cases").iterdir()}
    assert json.loads(next((out / "cases").iterdir()).read_text())["rows"]
