"""Test-time-augmentation uncertainty: maps on the input grid, bounded entropy, scores by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfoundry.inference.predictor import Predictor
from medfoundry.inference.uncertainty import case_scores, predict_with_uncertainty
from medfoundry.io import read_image


def test_case_scores_by_hand():
    entropy = np.zeros((2, 3, 3))
    entropy[0, 0, 0] = 0.6
    a = np.zeros((2, 3, 3), bool)
    a[0, 0, :2] = True  # 2 voxels
    b = a.copy()
    b[1, 2, 2] = True  # one more voxel
    s = case_scores(entropy, [a, b], a)
    assert s["mean_entropy_fg"] == pytest.approx(0.6 / 3)  # union: 3 voxels
    assert s["mean_entropy"] == pytest.approx(0.6 / 18)
    assert s["tta_disagreement"] == pytest.approx(1 - (1 + 2 * 2 / 5) / 2)
    empty = np.zeros_like(a)
    assert case_scores(entropy, [empty, empty], empty)["tta_disagreement"] == 0.0


@pytest.mark.real_data
def test_uncertainty_maps_have_the_input_geometry(pretrained, hippo_dir):
    predictor = Predictor.from_checkpoint(pretrained, "cpu", dataset="hippocampus")
    path = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]
    image = read_image(path)
    r = predict_with_uncertainty(predictor, image)
    assert r.passes == 8  # no left/right class: every axis mirrored
    assert r.entropy.array.shape == (1, *image.shape_zyx)
    np.testing.assert_allclose(r.entropy.spacing_mm, image.spacing_mm)
    k = 1 + len(predictor.class_names)
    assert r.entropy.array.min() >= 0 and r.entropy.array.max() <= math.log(k) + 1e-5
    assert r.entropy.array.max() > 0
    assert r.labels.array.shape == (1, *image.shape_zyx)
    assert set(np.unique(r.labels.array)) <= {0, *predictor.output_ids}
    assert 0 <= r.scores["tta_disagreement"] <= 1
