"""Size arithmetic of a TSFM network without building it: parameters and training memory.

The memory model is an estimate of training memory (fp32 weights, gradients, SGD momentum, and the
activations autograd keeps) for one TSFM network; it is deliberately simple and documented here:

* encoder stage ``s`` (``V_s`` voxels, ``F_s`` channels, ``B_s`` residual blocks): each block keeps
  6 tensors (2 x conv, norm, activation), the down-sampling conv 3 more: ``V_s F_s (6 B_s + 3)``;
* decoder stage: interpolation, 1x1x1 conv, skip sum, one block: ``V_s F_s (2 + 6 decoder_blocks)``;
* Transformer bottleneck over ``T`` tokens of width ``W``, ``L`` layers, ``H`` heads: per layer
  ``T W (8 + 2 mlp_ratio)`` plus attention maps ``2 H T^2``;
* times batch size, times 4 bytes; plus 16 bytes per parameter.
"""

from __future__ import annotations

import numpy as np

from medfoundry.models.sizes import ModelSize


def count_params(size: ModelSize, num_stages: int, in_channels: int, num_classes: int) -> int:
    """Approximate parameter count of a TSFM network (convolutions and Transformer linear layers)."""
    feats = size.features(num_stages)
    conv = lambda cin, cout, k=3: cin * cout * k**3 + 3 * cout  # noqa: E731 - weight + bias + IN affine
    n = conv(in_channels, feats[0])
    for s, f in enumerate(feats):
        if s:
            n += conv(feats[s - 1], f)  # stride-2 down-sampling conv
        n += size.blocks_per_stage[s] * 2 * conv(f, f)
    for s in range(num_stages - 1):  # decoder: 1x1x1 conv halving channels + blocks
        n += conv(feats[s + 1], feats[s], 1) + size.decoder_blocks * 2 * conv(feats[s], feats[s])
    n += conv(feats[0], num_classes, 1)
    if size.transformer_depth:
        w = size.transformer_width
        per_layer = 4 * w * w + 2 * int(size.mlp_ratio * w) * w + 9 * w
        n += size.transformer_depth * per_layer + 2 * feats[-1] * w
    return int(n)


def estimate_memory_bytes(
    size: ModelSize,
    patch_vox: list[int],
    strides: list[list[int]],
    batch: int,
    in_channels: int = 1,
    num_classes: int = 8,
) -> int:
    """Estimated training memory in bytes (see the module docstring for the model)."""
    feats = size.features(len(strides))
    vox = float(np.prod(patch_vox))
    floats = 0.0
    for s, f in enumerate(feats):
        vox /= np.prod(strides[s])
        floats += vox * f * (6 * size.blocks_per_stage[s] + 3)
        if s < len(feats) - 1:
            floats += vox * f * (2 + 6 * size.decoder_blocks)
    if size.transformer_depth:
        tokens, w = vox, size.transformer_width
        floats += size.transformer_depth * (
            tokens * w * (8 + 2 * size.mlp_ratio) + 2 * size.transformer_heads * tokens**2
        )
    return int(4 * batch * floats + 16 * count_params(size, len(strides), in_channels, num_classes))
