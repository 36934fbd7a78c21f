"""Every metric against MONAI (an independent implementation) on real label maps and analytic shapes
with anisotropic spacing, plus the empty-mask conventions."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
)

from medfoundry.evaluation.metrics import (
    all_metrics,
    dice_score,
    hd95_mm,
    iou_score,
    surface_dice,
    volume_ml,
)


def _monai(pred: np.ndarray, ref: np.ndarray, spacing, tol: float) -> dict:
    p = torch.from_numpy(np.stack([~pred, pred]))[None].float()  # (1, 2, Z, Y, X) one-hot
    r = torch.from_numpy(np.stack([~ref, ref]))[None].float()
    return {
        "dice": compute_dice(p, r, include_background=False).item(),
        "iou": compute_iou(p, r, include_background=False).item(),
        "hd95_mm": compute_hausdorff_distance(p, r, percentile=95, spacing=list(spacing)).item(),
        "surface_dice": compute_surface_dice(p, r, [tol], spacing=list(spacing)).item(),
    }


def _ellipsoid(shape, centre, radii_mm, spacing) -> np.ndarray:
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii_mm, strict=True)) <= 1


def _assert_matches(pred, ref, spacing, tol):
    ours = all_metrics(pred, ref, spacing, tol)
    theirs = _monai(pred, ref, spacing, tol)
    for k, v in theirs.items():
        assert ours[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


def test_anisotropic_ellipsoids_match_monai():
    spacing = (3.0, 0.8, 1.2)  # (Z, Y, X) mm
    shape = (24, 80, 60)
    ref = _ellipsoid(shape, (36, 32, 36), (20, 18, 15), spacing)
    pred = _ellipsoid(shape, (39, 30, 37), (18, 20, 15), spacing)
    _assert_matches(pred, ref, spacing, 2.0)


def test_analytic_values():
    spacing = (2.0, 1.0, 1.0)
    ref = np.zeros((10, 20, 20), bool)
    ref[2:6, 5:15, 5:15] = True  # 4 x 10 x 10 voxels = 800 mm^3
    pred = np.zeros_like(ref)
    pred[2:6, 5:15, 10:20] = True  # half overlap, shifted 5 voxels (5 mm) along X
    assert volume_ml(ref, spacing) == pytest.approx(0.8)
    assert dice_score(pred, ref) == pytest.approx(0.5)
    assert iou_score(pred, ref) == pytest.approx(1 / 3)
    assert hd95_mm(pred, ref, spacing) == pytest.approx(5.0)  # the shifted faces are 5 mm apart
    assert surface_dice(pred, ref, spacing, 5.0) == pytest.approx(1.0)
    assert surface_dice(pred, ref, spacing, 0.0) < 1.0


def test_real_hippocampus_labels_match_monai(hippo_dir):
    files = sorted((hippo_dir / "labelsTr").glob("*.nii.gz"))[:3]
    # Predictions: each reference eroded/shifted (a realistic imperfect segmentation).
    for f in files:
        img = nib.load(f)
        lab = np.asarray(img.dataobj).astype(np.int16).transpose(2, 1, 0)  # (Z, Y, X)
        spacing = tuple(float(s) for s in img.header.get_zooms()[::-1])
        for cls in (1, 2):
            ref = lab == cls
            pred = np.roll(ref, 1, axis=2) & (np.roll(ref, -1, axis=1) | ref)
            _assert_matches(pred, ref, spacing, 1.0)


def test_empty_conventions():
    spacing = (1.0, 1.0, 1.0)
    empty = np.zeros((8, 8, 8), bool)
    full = empty.copy()
    full[2:5, 2:5, 2:5] = True
    both = all_metrics(empty, empty, spacing, 1.0)
    assert all(math.isnan(both[k]) for k in ("dice", "iou", "surface_dice", "hd95_mm"))
    missed = all_metrics(empty, full, spacing, 1.0)
    assert missed["dice"] == missed["iou"] == missed["surface_dice"] == 0.0
    assert math.isnan(missed["hd95_mm"])
    assert missed["ref_volume_ml"] == pytest.approx(27 / 1000) and missed["pred_volume_ml"] == 0
