"""Keeping the largest connected component per class, against MONAI's implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medfoundry.cli.main import main
from medfoundry.inference.postprocess import keep_largest_component
from medfoundry.io import read_label


def test_two_blobs_keep_the_larger_and_other_classes_stay():
    labels = np.zeros((10, 20, 20), dtype=np.uint8)
    labels[2:6, 2:8, 2:8] = 1  # 144 voxels
    labels[2:4, 12:14, 12:14] = 1  # 8 voxels, far away: removed
    labels[7:9, 12:18, 2:4] = 2  # class 2 not asked for: kept whole
    labels[7:8, 2:3, 18:19] = 2
    out = keep_largest_component(labels, [1])
    assert (out == 1).sum() == 144 and out[2:4, 12:14, 12:14].max() == 0
    assert np.array_equal(out == 2, labels == 2)
    assert keep_largest_component(labels, [2])[7, 2, 18] == 0
    corner = np.zeros((4, 4, 4), dtype=np.uint8)
    corner[0, 0, 0] = corner[1, 1, 1] = 1  # touching by a corner: one component (26-connected)
    assert (keep_largest_component(corner, [1]) == 1).sum() == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_monai_on_random_blobs(seed):
    from monai.transforms import KeepLargestConnectedComponent

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(24, 32, 32)), 1.5)
    labels = np.digitize(noise, [0.05, 0.15]).astype(np.uint8)  # classes 1 and 2, many blobs
    assert ndimage.label(labels == 1, structure=np.ones((3, 3, 3)))[1] > 1
    ours = keep_largest_component(labels, [1, 2])
    monai = KeepLargestConnectedComponent(applied_labels=[1, 2], independent=True, connectivity=3)
    ref = np.asarray(monai(labels[None]))[0]
    assert np.array_equal(ours, ref)


def test_predict_flag_leaves_one_component_per_class(pretrained, hippo_dir, tmp_path, capsys):
    image = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]
    base = ["-q", "predict", "-m", str(pretrained), "-i", str(image), "--device", "cpu"]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    assert main([*base, "-o", str(tmp_path / "lcc"), "--largest-component"]) == 0
    plain = read_label(tmp_path / "plain" / image.name).array[0]
    lcc = read_label(tmp_path / "lcc" / image.name).array[0]
    for cls in np.unique(plain[plain > 0]):
        assert ndimage.label(lcc == cls, structure=np.ones((3, 3, 3)))[1] <= 1
    assert np.all((lcc == plain) | (lcc == 0))  # only removes voxels
    assert main([*base, "-o", str(tmp_path / "x"), "--largest-component", "nope"]) == 2
    assert "--largest-component: unknown class(es) ['nope']" in capsys.readouterr().err
