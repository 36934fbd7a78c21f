"""Planning: target spacing rule, stage layout, memory fit, normalisation choice, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfoundry import MedfoundryError
from medfoundry.models.sizes import get_size
from medfoundry.planning import make_plan
from medfoundry.planning.layout import (
    estimate_memory_bytes,
    plan_patch,
    stage_strides,
    total_stride,
)
from medfoundry.planning.spacing import target_spacing
from medfoundry.pool import build_pool


def test_target_spacing_is_the_median_for_isotropic_data():
    spacings = np.array([[1.0, 0.8, 0.8], [1.2, 0.9, 0.9], [1.1, 1.0, 1.0]])
    shapes = np.array([[100, 200, 200]] * 3)
    assert target_spacing(spacings, shapes) == [1.1, 0.9, 0.9]


def test_target_spacing_uses_10th_percentile_for_thick_slices():
    z = np.array([5.0, 5.0, 6.0, 8.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0])
    spacings = np.stack([z, np.full(10, 1.5), np.full(10, 1.5)], axis=1)
    shapes = np.array([[10, 220, 220]] * 10)
    t = target_spacing(spacings, shapes)
    assert t[1:] == [1.5, 1.5]
    assert t[0] == pytest.approx(np.percentile(z, 10))  # not the median (10 mm)


def test_stage_strides_wait_on_the_thick_axis():
    strides = stage_strides([16, 160, 160], [6.0, 1.25, 1.25], max_stages=6)
    assert strides[0] == [1, 1, 1]
    # z waits while it is over twice the in-plane spacing (6 > 2.5, 6 > 5), then joins (6 <= 10).
    assert strides[1] == [1, 2, 2] and strides[2] == [1, 2, 2]
    assert strides[3] == [2, 2, 2]
    assert total_stride(strides)[0] <= 16 // 4  # z keeps >= 4 voxels


def test_stage_strides_a_short_fine_axis_does_not_stop_the_others():
    # A flat patch with a finer z (ACDC at 1x2x2 mm voxel units): z can be halved only once; y and x
    # go on down to 4 voxels. Comparing with z's spacing once z could not be halved stopped y and x at
    # 16x16, a 1024-token transformer bottleneck about 3x slower per step on CPU.
    strides = stage_strides([8, 64, 64], [1.0, 2.0, 2.0], max_stages=5)
    assert strides == [[1, 1, 1], [2, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2]]
    assert stage_strides([8, 8, 8], [1.0, 1.0, 1.0], max_stages=5) == [[1, 1, 1], [2, 2, 2]]


def test_plan_patch_fits_the_budget_and_the_stride():
    size = get_size("tsfm_b")
    for gb in (2, 8, 24):
        out = plan_patch(size, [120, 300, 300], [1.0, 1.0, 1.0], gb * 2**30, total_pool_vox=1e10)
        strides = [s["stride"] for s in out["stages"]]
        assert all(
            p % t == 0 for p, t in zip(out["patch_size_vox"], total_stride(strides), strict=True)
        )
        assert (
            estimate_memory_bytes(size, out["patch_size_vox"], strides, out["batch_size"])
            <= gb * 2**30
        )
    small = plan_patch(size, [120, 300, 300], [1.0, 1.0, 1.0], 2 * 2**30, 1e10)["patch_size_vox"]
    large = plan_patch(size, [120, 300, 300], [1.0, 1.0, 1.0], 24 * 2**30, 1e10)["patch_size_vox"]
    assert np.prod(large) > np.prod(small)


@pytest.fixture(scope="module")
def synth_pool(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthpool")
    build_pool(synth_dir / "pool.yaml", out, progress=False)
    return out


def test_plan_is_deterministic_bytes(synth_pool):
    first = make_plan(synth_pool, model="tsfm_s").read_bytes()
    second = make_plan(synth_pool, model="tsfm_s").read_bytes()
    assert first == second


def test_ct_gets_dataset_clipping_and_mr_per_case_zscore(synth_pool):
    plan = json.loads(make_plan(synth_pool, model="tsfm_test").read_text())
    ct = plan["datasets"]["synthabdomenct"]["normalization"][0]
    mr = plan["datasets"]["synthabdomenmr"]["normalization"][0]
    assert ct["scheme"] == "ct" and mr == {"scheme": "zscore"}
    lo, hi = ct["clip"]
    assert -100 < lo < ct["mean"] < hi < 400  # foreground organs in HU, not air or bone
    assert plan["datasets"]["synthabdomenmr"]["anisotropic"] is True
    assert plan["datasets"]["synthabdomenmr"]["target_spacing_mm"][0] == 8.0


def test_fixed_patch_must_match_the_stride(synth_pool):
    plan = json.loads(
        make_plan(
            synth_pool, model="tsfm_test", patch_size_vox=[16, 64, 64], batch_size=3
        ).read_text()
    )
    assert plan["patch_size_vox"] == [16, 64, 64] and plan["batch_size"] == 3
    with pytest.raises(MedfoundryError, match="divisible"):
        make_plan(synth_pool, model="tsfm_test", patch_size_vox=[17, 64, 64])
    with pytest.raises(MedfoundryError, match="unknown model"):
        make_plan(synth_pool, model="tsfm_xxl")


def test_target_spacing_override_replaces_the_planned_spacing(synth_pool):
    planned = json.loads(make_plan(synth_pool, model="tsfm_test").read_text())["datasets"]
    plan = json.loads(
        make_plan(
            synth_pool, model="tsfm_test", target_spacing_mm={"synthabdomenmr": [8.0, 3.0, 3.0]}
        ).read_text()
    )["datasets"]
    mr, old = plan["synthabdomenmr"], planned["synthabdomenmr"]
    assert mr["target_spacing_mm"] == [8.0, 3.0, 3.0]
    # the median shape follows the new grid: in-plane voxel counts scale by old / new spacing
    for axis in (1, 2):
        ratio = old["target_spacing_mm"][axis] / 3.0
        assert mr["median_shape_vox"][axis] == pytest.approx(
            old["median_shape_vox"][axis] * ratio, rel=0.02
        )
    assert plan["synthabdomenct"] == planned["synthabdomenct"]  # other datasets untouched
    with pytest.raises(MedfoundryError, match="not a dataset of this pool"):
        make_plan(synth_pool, model="tsfm_test", target_spacing_mm={"acdc": [1, 2, 2]})
    with pytest.raises(MedfoundryError, match="three positive numbers"):
        make_plan(synth_pool, model="tsfm_test", target_spacing_mm={"synthabdomenmr": [1, 0, 2]})
