"""The TSFM network: residual CNN encoder -> Transformer bottleneck -> interpolation decoder.

Input ``(B, in_channels, Z, Y, X)`` with each spatial size divisible by the total stride; output logits
``(B, num_classes, Z, Y, X)``, or with deep supervision a list of logits from full resolution down.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medfoundry.models.blocks import ConvNormAct, Downsample, ResidualBlock, Upsample
from medfoundry.models.sizes import ModelSize, total_stride
from medfoundry.models.transformer import TransformerBottleneck


class TSFM(nn.Module):
    def __init__(
        self,
        size: ModelSize,
        in_channels: int,
        num_classes: int,
        strides: list[list[int]],
        patch_size: list[int],
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if len(strides) > size.max_stages:
            raise ValueError(
                f"{size.name} has at most {size.max_stages} stages, got {len(strides)}"
            )
        feats = size.features(len(strides))
        self.size, self.strides, self.deep_supervision = (
            size,
            [list(s) for s in strides],
            deep_supervision,
        )
        self.stem = ConvNormAct(in_channels, feats[0])
        self.encoder = nn.ModuleList()
        for s, f in enumerate(feats):
            down = [Downsample(feats[s - 1], f, tuple(strides[s]))] if s else []
            self.encoder.append(
                nn.Sequential(*down, *[ResidualBlock(f) for _ in range(size.blocks_per_stage[s])])
            )
        grid = [p // t for p, t in zip(patch_size, total_stride(strides), strict=True)]
        self.bottleneck = (
            TransformerBottleneck(
                feats[-1],
                size.transformer_width,
                size.transformer_depth,
                size.transformer_heads,
                size.mlp_ratio,
                grid,
            )
            if size.transformer_depth
            else nn.Identity()
        )
        self.up = nn.ModuleList(Upsample(feats[s + 1], feats[s]) for s in range(len(feats) - 1))
        self.decoder = nn.ModuleList(
            nn.Sequential(*[ResidualBlock(feats[s]) for _ in range(size.decoder_blocks)])
            for s in range(len(feats) - 1)
        )
        self.heads = nn.ModuleList(
            nn.Conv3d(feats[s], num_classes, 1)
            for s in range(len(feats) - 1 if deep_supervision else 1)
        )
        self.checkpointing = False

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in the backward pass (less memory, same outputs)."""
        self.checkpointing = enabled
        if isinstance(self.bottleneck, TransformerBottleneck):
            self.bottleneck.checkpointing = enabled

    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and self.training:
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward(self, x: torch.Tensor):
        skips = []
        x = self.stem(x)
        for stage in self.encoder:
            x = self._run(stage, x)
            skips.append(x)
        x = self.bottleneck(x)
        outputs = []
        for s in reversed(range(len(self.up))):
            x = self.up[s](x, skips[s].shape[2:]) + skips[s]  # (B, F_s, ...) at stage s resolution
            x = self._run(self.decoder[s], x)
            if self.deep_supervision and s < len(self.heads):
                outputs.append(self.heads[s](x))
        if not self.deep_supervision:
            return self.heads[0](x)
        return outputs[::-1]  # full resolution first
