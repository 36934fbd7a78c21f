"""The TSFM size ladder as plain data (no torch), shared by planning and the network builder.

A TSFM network: a residual CNN encoder whose stages double the channels (from ``base_features``,
capped at ``max_features``) while stride-2 convolutions halve the spatial size, a Transformer
bottleneck at the lowest resolution, and a decoder of 1x1x1 interpolation + 1x1x1 convolution
up-sampling blocks with skip connections. ``transformer_depth == 0`` is the CNN-only ablation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfoundry import MedfoundryError

MIN_FEATURE_MAP_VOX = 4
"""No axis is down-sampled below this many voxels at the bottleneck."""


@dataclass(frozen=True)
class ModelSize:
    name: str
    base_features: int
    """Channels of the first stage; each later stage doubles them."""
    max_features: int
    """Cap on channels per stage."""
    blocks_per_stage: tuple[int, ...]
    """Residual blocks in each encoder stage; its length is the most stages the model can have."""
    transformer_width: int
    transformer_depth: int
    transformer_heads: int
    mlp_ratio: float = 4.0
    decoder_blocks: int = 1
    """Residual blocks after each up-sampling step."""

    @property
    def max_stages(self) -> int:
        return len(self.blocks_per_stage)

    def features(self, num_stages: int) -> list[int]:
        """Channels of each of the first ``num_stages`` stages."""
        return [min(self.base_features * 2**s, self.max_features) for s in range(num_stages)]


_LADDER = [
    # name, base, max, blocks per stage, transformer width / depth / heads
    ModelSize("tsfm_test", 8, 64, (1, 1, 1, 1), 64, 2, 4),
    ModelSize("tsfm_s", 16, 256, (1, 2, 2, 2, 2), 384, 6, 6),
    ModelSize("tsfm_b", 32, 320, (1, 2, 3, 3, 3, 3), 768, 12, 12),
    ModelSize("tsfm_l", 64, 512, (2, 3, 4, 4, 4, 4), 1024, 24, 16),
    ModelSize(
        "tsfm_h", 96, 768, (2, 4, 6, 6, 6, 6), 1536, 32, 16
    ),  # ~1.66B parameters (TSFM: ~1.6B)
]

MODEL_SIZES: dict[str, ModelSize] = {s.name: s for s in _LADDER}
# CNN-only ablation of every size: the same encoder/decoder, no Transformer bottleneck.
MODEL_SIZES.update(
    {
        f"{s.name}_cnn": ModelSize(
            f"{s.name}_cnn",
            s.base_features,
            s.max_features,
            s.blocks_per_stage,
            s.transformer_width,
            0,
            s.transformer_heads,
        )
        for s in _LADDER
    }
)


def get_size(name: str) -> ModelSize:
    try:
        return MODEL_SIZES[name]
    except KeyError:
        raise MedfoundryError(
            f"unknown model '{name}' (choose from {', '.join(MODEL_SIZES)})"
        ) from None


def stage_strides(
    patch_vox: list[int], spacing_mm: list[float], max_stages: int
) -> list[list[int]]:
    """Per-stage strides ``(Z, Y, X)``; stage 0 (the stem) has stride 1.

    An axis is halved at a stage while its feature map stays >= 2 * MIN_FEATURE_MAP_VOX voxels and its
    current spacing is at most twice the finest current spacing among the axes that can still be halved
    (so thick-slice axes wait, but an axis too short to halve again does not hold the others back).
    """
    size = np.array(patch_vox, dtype=np.float64)
    spacing = np.array(spacing_mm, dtype=np.float64)
    strides = [[1, 1, 1]]
    while len(strides) < max_stages:
        can_halve = size >= 2 * MIN_FEATURE_MAP_VOX
        if not can_halve.any():
            break
        finest = spacing[can_halve].min()
        stride = [2 if can_halve[a] and spacing[a] <= 2 * finest else 1 for a in range(3)]
        strides.append(stride)
        size /= stride
        spacing *= stride
    return strides


def total_stride(strides: list[list[int]]) -> list[int]:
    return [int(np.prod([s[a] for s in strides])) for a in range(3)]
