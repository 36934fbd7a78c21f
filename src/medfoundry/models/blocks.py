"""TSFM building blocks (torch only): conv layers, the residual block, down- and up-sampling.

Tensors are ``(B, C, Z, Y, X)`` throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.01


class ConvNormAct(nn.Sequential):
    """Conv3d -> InstanceNorm3d (affine) -> LeakyReLU: the CNN's basic layer."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride=1) -> None:
        super().__init__(
            nn.Conv3d(cin, cout, kernel, stride=stride, padding=kernel // 2),
            nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two 3x3x3 convolutions with InstanceNorm and LeakyReLU, pre-activation residual:
    ``x + conv(act(norm(conv(act(norm(x))))))`` (identity mapping; He et al. 2016)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.InstanceNorm3d(channels, affine=True)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm2 = nn.InstanceNorm3d(channels, affine=True)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.norm1(x), NEGATIVE_SLOPE))
        h = self.conv2(F.leaky_relu(self.norm2(h), NEGATIVE_SLOPE))
        return x + h


class Downsample(ConvNormAct):
    """Stride-2 (per axis, so anisotropic strides work) 3x3x3 conv that changes the channels."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int]) -> None:
        super().__init__(cin, cout, 3, stride=tuple(stride))


class Upsample(nn.Module):
    """1x1x1 interpolation up-sampling followed by a 1x1x1 convolution that halves the channels.

    Trilinear interpolation and a 1x1x1 convolution are both linear per voxel (interpolation weights
    sum to 1, so the bias passes through), hence they commute: applying the convolution first, at the
    low resolution, gives the same output for 2^3 = 8 times fewer multiply-adds.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        return F.interpolate(self.proj(x), size=size, mode="trilinear", align_corners=False)
