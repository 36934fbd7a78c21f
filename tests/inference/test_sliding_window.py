"""The sliding window against MONAI's ``sliding_window_inference`` (an independent implementation)
and against the obvious slow path (one forward pass over the whole image)."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from medfoundry.inference.sliding_window import compute_gaussian, predict_sliding_window
from medfoundry.models.registry import create_model

PATCH = [16, 32, 32]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tsfm_test", 2, 3, patch_size=PATCH).eval()


# Image sizes whose tile starts coincide in both (each axis: the patch, a whole number of half
# patches more, or less than the patch, which both pad symmetrically).
@pytest.mark.parametrize("shape", [(16, 32, 32), (24, 48, 64), (40, 32, 48), (10, 48, 20)])
def test_equals_monai_with_the_same_gaussian_weights(model, shape):
    torch.manual_seed(1)
    image = torch.randn(2, *shape)
    ours = predict_sliding_window(model, image, PATCH, step_fraction=0.5)
    with torch.no_grad():
        ref = sliding_window_inference(
            image[None],
            PATCH,
            sw_batch_size=1,
            predictor=model,
            overlap=0.5,
            mode="gaussian",
            roi_weight_map=torch.from_numpy(compute_gaussian(PATCH)),
            padding_mode="constant",
        )[0]
    assert ours.shape == ref.shape == (3, *shape)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(21, 45, 37), (9, 70, 33)])
@pytest.mark.parametrize("tiles_per_batch", [1, 3])
def test_a_pointwise_model_gives_its_whole_image_output_on_any_grid(shape, tiles_per_batch):
    """Any tiling of a per-voxel model must reproduce the model on the whole image: the Gaussian
    weights are normalised and every voxel is covered."""
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 1), torch.nn.Tanh()).eval()
    image = torch.randn(2, *shape)
    ours = predict_sliding_window(net, image, PATCH, 0.5, tiles_per_batch)
    with torch.no_grad():
        whole = net(torch.nn.functional.pad(image, [0] * 6)[None])[0]
    torch.testing.assert_close(ours, whole, rtol=1e-5, atol=1e-5)
