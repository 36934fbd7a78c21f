"""Sampling, augmentation replay, reproducible batches and splits, on real preprocessed data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfoundry.data.augment import apply_params
from medfoundry.data.augment_config import AugmentConfig, is_flat, sample_params, spatial_region
from medfoundry.data.loader import BatchSpec, batch_loader, make_batch
from medfoundry.data.sampler import PatchSampler, crop_padded
from medfoundry.data.split import split_cases
from medfoundry.pool import load_pool


def test_augmentation_replays_from_recorded_parameters():
    cfg = AugmentConfig(
        rotation_p=1,
        scale_p=1,
        noise_p=1,
        blur_p=1,
        brightness_p=1,
        contrast_p=1,
        lowres_p=1,
        gamma_p=1,
    )
    params = sample_params(cfg, np.random.default_rng(3))
    assert {"rotation_rad", "scale", "noise_std", "blur_sigma", "gamma", "lowres_zoom"} <= set(
        params
    )
    img = torch.randn(1, 24, 40, 40)
    lab = (torch.rand(24, 40, 40) > 0.7).long()
    a = apply_params(params, img, lab, (16, 32, 32))
    b = apply_params(params, img.clone(), lab.clone(), (16, 32, 32))
    torch.testing.assert_close(a[0], b[0])
    assert torch.equal(a[1], b[1]) and a[0].shape == (1, 16, 32, 32) and a[1].shape == (16, 32, 32)


def test_identity_augmentation_is_a_centre_crop_and_mirror_flips():
    img = torch.arange(4 * 6 * 6, dtype=torch.float32).view(1, 4, 6, 6)
    lab = torch.arange(4 * 6 * 6).view(4, 6, 6) % 3
    out, out_lab = apply_params({}, img, lab, (2, 4, 4))
    torch.testing.assert_close(out, img[:, 1:3, 1:5, 1:5])
    flipped, _ = apply_params({"mirror_axes": [2]}, img, lab, (4, 6, 6))
    torch.testing.assert_close(flipped, torch.flip(img, [3]))
    rotated, rot_lab = apply_params(
        {"rotation_rad": [0.0, 0.0, 0.0], "scale": 1.0}, img, lab, (4, 6, 6)
    )
    torch.testing.assert_close(rotated, img, atol=1e-4, rtol=0)  # the affine path at identity
    assert torch.equal(rot_lab, lab)


def test_flat_patches_get_in_plane_augmentation_as_in_nnunet():
    cfg = AugmentConfig(rotation_p=1, scale_p=1, lowres_p=1)
    assert is_flat(cfg, [16, 80, 80]) and is_flat(cfg, [8, 128, 128])
    assert not is_flat(cfg, [16, 32, 32]) and not is_flat(cfg, [40, 56, 40])
    assert spatial_region(cfg, [16, 80, 80]) == [16, 159, 159]  # Z as is; in-plane sqrt(2) * 1.4
    assert spatial_region(cfg, [16, 32, 32]) == [39, 78, 78]  # 3D: sqrt(3) * 1.4 on every axis
    rng = np.random.default_rng(0)
    draws = [sample_params(cfg, rng, flat=True) for _ in range(200)]
    angles = np.array([d["rotation_rad"] for d in draws])
    assert np.all(angles[:, 1:] == 0) and np.abs(angles[:, 0]).max() > np.radians(150)
    assert all(d["in_plane"] for d in draws)
    # Each Z slice of a flat sample comes from the same input slice: no mixing across thick slices.
    img = torch.arange(1.0, 5.0).view(1, 4, 1, 1).expand(1, 4, 20, 20).contiguous()
    lab = torch.zeros(4, 20, 20, dtype=torch.long)
    flat = {"in_plane": True, "rotation_rad": [0.7, 0.0, 0.0], "scale": 1.3, "lowres_zoom": 0.5}
    out, _ = apply_params(flat, img, lab, (4, 12, 12))
    torch.testing.assert_close(out, img[:, :, :12, :12], atol=1e-5, rtol=0)
    mixed, _ = apply_params(
        {k: v for k, v in flat.items() if k != "in_plane"}, img, lab, (4, 12, 12)
    )
    assert (mixed - img[:, :, :12, :12]).abs().max() > 0.1


def test_crop_padded_pads_outside_the_volume():
    a = np.arange(27).reshape(3, 3, 3)
    out = crop_padded(a, [-1, 1, 2], [3, 3, 3])
    assert out.shape == (3, 3, 3) and out[0].sum() == 0
    assert out[1, 0, 0] == a[0, 1, 2] and out[1, 0, 1] == 0


def test_batches_are_a_pure_function_of_seed_and_index(real_small_pool):
    pool = load_pool(real_small_pool)
    sampler = PatchSampler(str(real_small_pool), pool["cases"], fg_fraction=0.5)
    spec = BatchSpec([16, 32, 32], 3, len(pool["labels"]) - 1, seed=5, augment=AugmentConfig())
    a, b, c = (
        make_batch(sampler, spec, 7),
        make_batch(sampler, spec, 7),
        make_batch(sampler, spec, 8),
    )
    assert (
        torch.equal(a["image"], b["image"])
        and a["case_ids"] == b["case_ids"]
        and a["params"] == b["params"]
    )
    assert not torch.equal(a["image"], c["image"])
    assert a["image"].shape == (3, 1, 16, 32, 32) and a["label"].shape == (3, 16, 32, 32)
    for ids, valid in zip(a["case_ids"], a["valid"], strict=True):
        expected = [1, 2] if ids.startswith("hippocampus") else [3, 4, 5]
        assert valid.nonzero().flatten().add(1).tolist() == expected
    # Background workers give the same stream as the main process.
    in_process = batch_loader(sampler, spec, start_step=4, workers=0)
    workers = batch_loader(sampler, spec, start_step=4, workers=2)
    for _ in range(3):
        x, y = next(in_process), next(workers)
        assert x["index"] == y["index"] and torch.equal(x["image"], y["image"])


def test_foreground_oversampling_centres_on_a_valid_class(real_small_pool):
    pool = load_pool(real_small_pool)
    sampler = PatchSampler(str(real_small_pool), pool["cases"], fg_fraction=1.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = sampler.sample(rng, [16, 32, 32])
        assert s["label"][8, 16, 16] in s["valid_labels"]


def test_sampling_follows_the_pool_probabilities(real_small_pool):
    pool = load_pool(real_small_pool)
    sampler = PatchSampler(str(real_small_pool), pool["cases"], fg_fraction=0.0)
    rng = np.random.default_rng(1)
    draws = [sampler.sample(rng, [8, 8, 8])["case_id"].split("/")[0] for _ in range(600)]
    share = draws.count("acdc") / len(draws)
    expected = sum(c["sampling_probability"] for c in pool["cases"] if c["dataset"] == "acdc")
    assert abs(share - expected) < 0.06


def test_one_dataset_per_batch_keeps_each_dataset_share(real_small_pool):
    pool = load_pool(real_small_pool)
    sampler = PatchSampler(str(real_small_pool), pool["cases"], fg_fraction=0.0)
    expected = sum(c["sampling_probability"] for c in pool["cases"] if c["dataset"] == "acdc")
    assert sampler.dataset_probabilities["acdc"] == pytest.approx(expected)
    rng = np.random.default_rng(2)
    draws = [sampler.sample(rng, [8, 8, 8], sampler.draw_dataset(rng)) for _ in range(600)]
    assert abs([d["case_id"].split("/")[0] for d in draws].count("acdc") / 600 - expected) < 0.06
    acdc = {c["id"] for c in pool["cases"] if c["dataset"] == "acdc"}
    forced = {sampler.sample(rng, [8, 8, 8], "acdc")["case_id"] for _ in range(300)}
    assert forced <= acdc and len(forced) >= 0.9 * len(acdc)  # all of the dataset's cases

    K = len(pool["labels"]) - 1
    spec = BatchSpec([16, 32, 32], 3, K, seed=5, augment=AugmentConfig(enabled=False))
    one = BatchSpec([16, 32, 32], 3, K, 5, AugmentConfig(enabled=False), one_dataset_per_batch=True)

    def datasets(s, k):
        return {i.split("/")[0] for i in make_batch(sampler, s, k)["case_ids"]}

    assert all(len(datasets(one, k)) == 1 for k in range(30))
    assert any(len(datasets(spec, k)) == 2 for k in range(30))  # the default mixes
    # A single-dataset pool: the option draws nothing, so batches are unchanged.
    hippo = PatchSampler(
        str(real_small_pool), [c for c in pool["cases"] if c["dataset"] == "hippocampus"]
    )
    assert hippo.draw_dataset(np.random.default_rng(0)) is None
    a, b = make_batch(hippo, spec, 3), make_batch(hippo, one, 3)
    assert a["case_ids"] == b["case_ids"] and torch.equal(a["image"], b["image"])


def test_split_keeps_patient_frames_together():
    cases = [
        {"id": f"acdc/patient{p:03d}_frame0{f}", "dataset": "acdc"}
        for p in range(10)
        for f in (1, 2)
    ]
    cases += [{"id": f"hip/case_{i}", "dataset": "hip"} for i in range(10)]
    s = split_cases(cases, 0.2, seed=0)
    val_patients = {c.split("_frame")[0] for c in s["val"] if c.startswith("acdc")}
    assert len(val_patients) == 2 and all(
        f"{p}_frame01" in s["val"] and f"{p}_frame02" in s["val"] for p in val_patients
    )
    assert sum(c.startswith("hip") for c in s["val"]) == 2
    assert split_cases(cases, 0.2, seed=0) == s and split_cases(cases, 0.2, seed=1) != s


@pytest.mark.parametrize(
    "params, region, out",
    [
        ({"rotation_rad": [0.4, -0.3, 0.2], "scale": 1.2}, (24, 40, 36), (16, 24, 20)),
        (
            {"rotation_rad": [1.1, 0.0, 0.0], "in_plane": True, "scale": 0.8},
            (6, 40, 48),
            (6, 24, 32),
        ),
        ({"scale": 1.35}, (20, 30, 26), (14, 20, 18)),
    ],
)
def test_the_spatial_transform_is_the_voxelwise_mapping(params, region, out):
    """grid_sample in normalised coordinates against the obvious path: for each output voxel, its
    offset from the patch centre (x, y, z) is scaled (not along Z in-plane), rotated, and sampled
    at that offset from the region centre, linearly (image) or at the nearest voxel (label)."""
    from scipy import ndimage

    from medfoundry.data.augment import _rot, _spatial

    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(size=(1, *region)).astype(np.float32))
    label = torch.from_numpy(rng.integers(0, 4, size=region))
    img, lab = _spatial(params, image, label, out)
    rz, ry, rx = params.get("rotation_rad", [0.0, 0.0, 0.0])
    rot = (_rot(rx, 0) @ _rot(ry, 1) @ _rot(rz, 2)).numpy()
    scale = np.full(3, params.get("scale", 1.0))
    if params.get("in_plane"):
        scale[2] = 1.0  # (x, y, z): Z keeps its size
    zyx = np.stack(np.meshgrid(*[np.arange(n) for n in out], indexing="ij"), -1).reshape(-1, 3)
    offset_xyz = (zyx - (np.array(out) - 1) / 2)[:, ::-1]
    source_xyz = (offset_xyz / scale) @ rot.T
    coords = (source_xyz[:, ::-1] + (np.array(region) - 1) / 2).T  # (3, N) in Z, Y, X
    slow = ndimage.map_coordinates(image[0].numpy(), coords, order=1, mode="grid-constant").reshape(
        out
    )
    np.testing.assert_allclose(img[0].numpy(), slow, atol=1e-4)
    nearest = ndimage.map_coordinates(label.numpy(), coords, order=0, mode="grid-constant").reshape(
        out
    )
    assert np.mean(lab.numpy() == nearest) > 0.995  # rounding of exact half-way points may differ
