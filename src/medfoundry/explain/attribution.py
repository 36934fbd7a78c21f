"""Saliency maps for one output of a TSFM model, through Captum (the kept library): Grad-CAM on any
layer of the backbone, occlusion sensitivity and integrated gradients, in 2D (one-slice volumes) and
3D, for a class of a classifier or for one class of a segmentation model.

Every map is ``(Z, Y, X)`` float32 on the grid of the input ``x`` ``(1, C, Z, Y, X)`` the network
read (the caller maps it back to the image's geometry). What is explained is a scalar per image,
:func:`classification_target` (the class's logit) or :func:`segmentation_target` (the mean logit of
the class over the voxels first predicted as that class, as Captum's segmentation recipe).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("gradcam", "occlusion", "ig")
IG_STEPS = 128


def classification_target(model: nn.Module, class_index: int, binary: bool) -> Callable:
    """``f(x) -> (B,)``: the logit of class ``class_index`` (binary models have one logit, the
    positive class's; class 0 is its negative)."""

    def f(x: torch.Tensor) -> torch.Tensor:
        logits = model(x).float()  # (B, n_out)
        if binary:
            return logits[:, 0] if class_index == 1 else -logits[:, 0]
        return logits[:, class_index]

    return f


def segmentation_target(model: nn.Module, channel: int, x: torch.Tensor, softmax: bool) -> Callable:
    """``f(x) -> (B,)``: the mean logit of output ``channel`` over the voxels where the unperturbed
    input ``x`` is predicted as that channel's class (every voxel when none is)."""
    with torch.no_grad():
        out = _full_res(model(x)).float()  # (B, K, Z, Y, X)
        region = (out.argmax(1) == channel) if softmax else (out[:, channel] > 0)
    if not bool(region.any()):
        region = torch.ones_like(region)
    weight = region.float() / region.float().sum(dim=(1, 2, 3), keepdim=True).clamp_min(1)

    def f(inp: torch.Tensor) -> torch.Tensor:
        logits = _full_res(model(inp)).float()[:, channel]  # (B, Z, Y, X)
        w = weight.expand(len(inp), *weight.shape[1:])
        return (logits * w).sum(dim=(1, 2, 3))

    return f


def saliency(
    method: str,
    target: Callable,
    x: torch.Tensor,
    model: nn.Module | None = None,
    layer: str | None = None,
) -> np.ndarray:
    """The ``method`` map of ``target`` at ``x`` ``(1, C, Z, Y, X)``: ``(Z, Y, X)`` float32.
    Grad-CAM (``layer``: a module name of ``model``, e.g. ``encoder.2``; ReLU'd, up-sampled to the
    input, trilinear); occlusion (zero = the z-scored mean, in windows of about 1/7 of each axis,
    half-overlapping, channels together); integrated gradients from a blurred copy of the input
    (:func:`blurred_baseline`), summed over channels."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion

    x = x.detach().float()
    if method == "gradcam":
        if model is None or layer is None:
            raise ValueError("Grad-CAM needs the model and a layer name")
        cam = LayerGradCam(target, model.get_submodule(layer)).attribute(x, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam.float(), tuple(x.shape[2:]), "trilinear")
        out = cam[0, 0]
    elif method == "occlusion":
        window, stride = occlusion_window(list(x.shape[2:]))
        attr = Occlusion(target).attribute(
            x,
            sliding_window_shapes=(x.shape[1], *window),
            strides=(x.shape[1], *stride),
            baselines=0.0,
            perturbations_per_eval=32,
        )
        out = attr[0].sum(0)
    elif method == "ig":
        attr = IntegratedGradients(target).attribute(
            x, baselines=blurred_baseline(x), n_steps=IG_STEPS, internal_batch_size=8
        )
        out = attr[0].sum(0)
    else:
        raise ValueError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    return out.detach().float().cpu().numpy()


def blurred_baseline(x: torch.Tensor) -> torch.Tensor:
    """The integrated-gradients baseline: ``x`` ``(1, C, Z, Y, X)`` Gaussian-blurred (sigma 1/8 of
    each spatial axis, none across channels or a one-slice Z). Not the usual zero image: the stem's
    InstanceNorm makes the network nearly blind to the input's scale, so along the path ``a * x``
    from zero the output jumps near ``a = 0`` and a Riemann sum misses it (the attributions then do
    not add up to the output's change); the blurred path keeps the image's scale and removes its
    detail, which is what the map should explain."""
    from scipy.ndimage import gaussian_filter

    sigma = [0, 0] + [s / 8 if s > 1 else 0 for s in x.shape[2:]]
    blurred = gaussian_filter(x.detach().cpu().numpy(), sigma=sigma, mode="nearest")
    return torch.from_numpy(blurred).to(x)


def occlusion_window(shape_zyx: list[int]) -> tuple[list[int], list[int]]:
    """A window of about 1/7 of each axis (at least 1 voxel) and half of it as the stride."""
    window = [max(1, round(s / 7)) for s in shape_zyx]
    return window, [max(1, w // 2) for w in window]


def default_layer(model: nn.Module) -> str:
    """The last encoder stage: the bottleneck's input, the backbone's most semantic CNN layer."""
    return f"encoder.{len(model.encoder) - 1}"


def _full_res(outputs) -> torch.Tensor:
    return outputs[0] if isinstance(outputs, list) else outputs


def resize_map(m: np.ndarray, shape_zyx: list[int]) -> np.ndarray:
    """A ``(Z, Y, X)`` map resized (trilinear) to ``shape_zyx``."""
    if list(m.shape) == list(shape_zyx):
        return m
    t = torch.from_numpy(np.ascontiguousarray(m, np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape_zyx), mode="trilinear")[0, 0].numpy()
