"""Saliency maps: Grad-CAM against MONAI's, integrated gradients' completeness, occlusion on a
known region, and the sanity-check helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfoundry.explain.attribution import (
    blurred_baseline,
    classification_target,
    occlusion_window,
    saliency,
    segmentation_target,
)
from medfoundry.explain.sanity import fraction_inside, randomized_copy, rank_similarity
from medfoundry.models.registry import create_network


def _classifier(shape, strides, outputs=1, seed=0):
    torch.manual_seed(seed)
    head = {"kind": "classification", "num_outputs": outputs}
    return create_network("tsfm_test", 1, head, patch_size=shape, strides=strides).eval()


@pytest.mark.parametrize(
    "shape,strides",
    [([1, 28, 28], [[1, 1, 1], [1, 2, 2], [1, 2, 2]]), ([16, 16, 16], [[1, 1, 1], [2, 2, 2]])],
)
@pytest.mark.parametrize("layer", ["encoder.0", "encoder.1"])
def test_gradcam_matches_monai(shape, strides, layer):
    from monai.visualize import GradCAM

    net = _classifier(shape, strides, outputs=3)
    x = torch.randn(1, 1, *shape)
    ours = saliency("gradcam", classification_target(net, 2, binary=False), x, net, layer)
    ref = GradCAM(nn_module=net, target_layers=layer)(x, class_idx=2)[0, 0].detach().numpy()
    assert ours.shape == tuple(shape) and ours.max() > 0
    span = ours.max() - ours.min()
    # MONAI's default post-processing maps (min, max) to (1, 0)
    np.testing.assert_allclose(1 - (ours - ours.min()) / span, ref, atol=1e-4)


def test_integrated_gradients_are_complete():
    """IG's axiom: the attributions sum to f(x) - f(baseline) (up to the Riemann sum's error)."""
    net = _classifier([1, 28, 28], [[1, 1, 1], [1, 2, 2], [1, 2, 2]])
    x = torch.randn(1, 1, 1, 28, 28)
    f = classification_target(net, 1, binary=True)
    m = saliency("ig", f, x)
    with torch.no_grad():
        gap = float(f(x) - f(blurred_baseline(x)))
    assert m.sum() == pytest.approx(gap, rel=0.15, abs=0.02)


def test_occlusion_finds_the_only_region_that_matters():
    x = torch.ones(1, 1, 14, 14, 14)

    def f(inp):  # depends on a 4^3 corner only
        return inp[:, 0, :4, :4, :4].sum(dim=(1, 2, 3))

    m = saliency("occlusion", f, x)
    assert m[:4, :4, :4].min() > 0 and m[8:, 8:, 8:].max() == 0
    assert occlusion_window([1, 28, 28]) == ([1, 4, 4], [1, 2, 2])


def test_segmentation_target_averages_the_predicted_region():
    torch.manual_seed(0)
    head = {"kind": "segmentation", "num_outputs": 2}
    net = create_network("tsfm_test", 1, head, [16, 16, 16], [[1, 1, 1], [2, 2, 2]]).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    f = segmentation_target(net, 1, x, softmax=False)
    with torch.no_grad():
        logits = net(x)[0, 1]
        region = logits > 0
        want = logits[region].mean() if region.any() else logits.mean()
        assert float(f(x)[0]) == pytest.approx(float(want), rel=1e-4)


def test_randomized_copy_and_similarity():
    net = _classifier([1, 28, 28], [[1, 1, 1], [1, 2, 2], [1, 2, 2]])
    twin = randomized_copy(net)
    changed = [
        not torch.equal(a, b)
        for (_, a), (_, b) in zip(net.named_parameters(), twin.named_parameters(), strict=True)
        if a.numel() > 1 and a.std() > 0
    ]
    assert all(changed)
    a = np.random.default_rng(0).normal(size=(4, 5, 6))
    assert rank_similarity(a, -a) == pytest.approx(1.0)  # by magnitude
    assert abs(rank_similarity(a, np.random.default_rng(1).normal(size=a.shape))) < 0.1


def test_fraction_inside_by_hand():
    mask = np.zeros((1, 4, 4), bool)
    mask[0, :2, :2] = True
    m = np.zeros((1, 4, 4))
    m[0, 0, 0], m[0, 3, 3] = 3.0, -1.0
    r = fraction_inside(m, mask)
    assert r["inside"] == pytest.approx(0.75) and r["chance"] == pytest.approx(0.25)
    assert fraction_inside(m, mask, dilate_vox=2)["chance"] > 0.25
