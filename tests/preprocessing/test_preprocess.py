"""Preprocessing on real data: exact inversion without resampling, Dice >= 0.95 with it, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from medfoundry.io import read_label
from medfoundry.planning import make_plan
from medfoundry.pool import build_pool, load_pool
from medfoundry.preprocessing import invert_label, load_case, preprocess_pool, preprocessed_cases
from medfoundry.preprocessing.cache import case_paths, load_locations
from medfoundry.preprocessing.resample import resample_label
from tests.pool.test_build import REAL_POOL


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory, hippo_dir, acdc_dir):
    tmp = tmp_path_factory.mktemp("realcache")
    spec = tmp / "pool.yaml"
    spec.write_text(REAL_POOL.format(hippo=hippo_dir, acdc=acdc_dir))
    build_pool(spec, tmp / "pool", jobs=2, progress=False)
    make_plan(tmp / "pool", model="tsfm_s")
    preprocess_pool(tmp / "pool", jobs=2, progress=False)
    return tmp / "pool"


def test_every_case_is_cached_and_inverts_exactly(real_cache):
    pool = load_pool(real_cache)
    assert preprocessed_cases(real_cache) == [c["id"] for c in pool["cases"]]
    for case in pool["cases"][::9] + pool["cases"][-3:]:  # 40+ cases of both datasets
        image, label, props = load_case(real_cache, case["id"])
        assert isinstance(image, np.memmap) and image.dtype == np.float32
        assert image.shape[1:] == label.shape and not props["resampled"]
        original = read_label(case["label"]).array[0]
        np.testing.assert_array_equal(invert_label(np.asarray(label), props), original)
        assert set(np.unique(label)) <= {0, *case["valid_labels"]}


def test_images_are_zscored_over_the_nonzero_region(real_cache):
    for case_id in ("hippocampus/hippocampus_001", "acdc/patient002_frame01"):
        image, _, props = load_case(real_cache, case_id)
        assert props["normalization"][0]["scheme"] == "zscore"
        assert abs(float(np.asarray(image).mean())) < 0.5


def test_foreground_locations_point_at_their_class(real_cache):
    _, label, props = load_case(real_cache, "acdc/patient002_frame01")
    locations = load_locations(real_cache, "acdc/patient002_frame01")
    assert set(locations) == set(props["classes_present"]) == {3, 4, 5}
    for cls, coords in locations.items():
        assert coords.shape[1] == 3 and (label[tuple(coords.T)] == cls).all()


@pytest.fixture(scope="module")
def resampled_acdc(tmp_path_factory, acdc_dir):
    """Real ACDC volumes given realistic, varied spacings (the files' own spacing was lost), so the
    target spacing differs from every case's and each case is resampled (anisotropic: 5-10 mm slices)."""
    tmp = tmp_path_factory.mktemp("acdcres")
    cases = [line.strip() for line in (acdc_dir / "val.list").read_text().split()][:6]
    spacings = [
        (1.3, 1.3, 5.0),
        (1.5, 1.5, 10.0),
        (1.6, 1.6, 6.5),
        (1.4, 1.4, 8.0),
        (1.7, 1.7, 10.0),
        (1.45, 1.45, 7.0),
    ]
    for sub in ("images", "labels"):
        (tmp / "data" / sub).mkdir(parents=True)
        for case, sp in zip(cases, spacings, strict=True):
            img = nib.load(acdc_dir / sub / f"{case}.nii.gz")
            aff = np.diag([*sp, 1.0])
            nib.save(
                nib.Nifti1Image(np.asanyarray(img.dataobj), aff),
                tmp / "data" / sub / f"{case}.nii.gz",
            )
    spec = tmp / "pool.yaml"
    spec.write_text(
        "name: r\ndatasets:\n  - name: acdc\n    root: data\n    images: images/{case}.nii.gz\n"
        "    labels: labels/{case}.nii.gz\n    modality: MRI\n    label_map: {1: rv, 2: myo, 3: lv}\n"
    )
    build_pool(spec, tmp / "pool", progress=False)
    make_plan(tmp / "pool", model="tsfm_s")
    preprocess_pool(tmp / "pool", jobs=2, progress=False)
    return tmp / "pool"


def test_resampled_real_labels_invert_with_dice_above_095(resampled_acdc):
    pool = load_pool(resampled_acdc)
    plan = json.loads((resampled_acdc / "plan.json").read_text())
    assert plan["datasets"]["acdc"]["anisotropic"]
    for case in pool["cases"]:
        _, label, props = load_case(resampled_acdc, case["id"])
        assert props["resampled"]
        back = invert_label(np.asarray(label), props)
        original = read_label(case["label"]).array[0]
        assert back.shape == original.shape
        for cls in (1, 2, 3):
            assert dice(back == cls, original == cls) >= 0.95, (case["id"], cls)


def test_fast_label_resampling_equals_one_hot_stack_argmax():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 4, (6, 9, 11)).astype(np.uint8)
    from medfoundry.preprocessing.resample import _zoom

    for shape, thick in (((12, 5, 17), None), ((3, 14, 14), 0)):
        stack = np.stack(
            [_zoom((label == c).astype(np.float32), shape, 1, thick) for c in range(4)]
        )
        slow = np.argmax(stack, axis=0)  # first maximum wins, as in the running maximum
        np.testing.assert_array_equal(resample_label(label, shape, thick), slow)


def test_killed_preprocessing_resumes_and_keeps_finished_cases(tmp_path, resampled_acdc, hippo_dir):
    from tests.conftest import copy_hippo_cases

    root = copy_hippo_cases(hippo_dir, tmp_path / "hippo", n=40)
    spec = tmp_path / "pool.yaml"
    spec.write_text(f"name: k\ndatasets:\n  - {{name: hippo, root: {root}, modality: MRI}}\n")
    build_pool(spec, tmp_path / "pool", progress=False)
    make_plan(tmp_path / "pool", model="tsfm_test")
    env = {**os.environ, "MEDFOUNDRY_SLOW_TEST_DELAY": "0.05"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medfoundry.cli.main",
            "-q",
            "preprocess",
            str(tmp_path / "pool"),
            "-j",
            "1",
        ],
        env=env,
    )
    cache = tmp_path / "pool" / "preprocessed" / "hippo"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache.glob("*.json"))) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(cache.glob("*.json"))
    assert 5 <= len(done) < 40, "the run should have been killed part-way"
    for props in done:  # every case marked complete is fully readable
        image, label, _ = load_case(tmp_path / "pool", f"hippo/{props.name[:-5]}")
        assert image.shape[1:] == label.shape
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    summary = preprocess_pool(tmp_path / "pool", progress=False)
    assert summary["kept"] == len(done) and summary["done"] == 40 - len(done)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert not list(cache.glob(".tmp-*"))
    pool = load_pool(tmp_path / "pool")
    for case in pool["cases"]:
        _, label, props = load_case(tmp_path / "pool", case["id"])
        np.testing.assert_array_equal(
            invert_label(np.asarray(label), props), read_label(case["label"]).array[0]
        )
    assert case_paths(tmp_path / "pool", pool["cases"][0]["id"])["image"].is_file()
