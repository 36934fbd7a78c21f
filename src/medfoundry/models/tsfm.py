"""The TSFM network: residual CNN encoder -> Transformer bottleneck -> interpolation decoder -> a head.

The backbone (``stem``, ``encoder``, ``bottleneck``, ``up``, ``decoder``) is the same for every task;
the head (``heads``) is the task's (:mod:`medfoundry.models.heads`). Input ``(B, in_channels, Z, Y, X)``
with each spatial size divisible by the total stride; output: what the head makes of the features
(segmentation: logits ``(B, K, Z, Y, X)``, or with deep supervision a list from full resolution down).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medfoundry.models.blocks import ConvNormAct, Downsample, ResidualBlock, Upsample
from medfoundry.models.heads import Features, build_head
from medfoundry.models.sizes import ModelSize, total_stride
from medfoundry.models.transformer import TransformerBottleneck, TransformerLayer

PARAMETER_GROUPS = ("stem", "encoder", "bottleneck", "decoder", "heads")
"""The model's parameter groups, input to output; freeze policies and optimisers ask by these names."""


class TSFM(nn.Module):
    def __init__(
        self,
        size: ModelSize,
        in_channels: int,
        strides: list[list[int]],
        patch_size: list[int],
        head: dict,
    ) -> None:
        super().__init__()
        if len(strides) > size.max_stages:
            raise ValueError(
                f"{size.name} has at most {size.max_stages} stages, got {len(strides)}"
            )
        feats = size.features(len(strides))
        self.size, self.strides = size, [list(s) for s in strides]
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
        heads = build_head(head, feats)
        levels = len(feats) - 1 if getattr(heads, "uses_decoder", True) else 0  # none: classifiers
        self.up = nn.ModuleList(Upsample(feats[s + 1], feats[s]) for s in range(levels))
        self.decoder = nn.ModuleList(
            nn.Sequential(*[ResidualBlock(feats[s]) for _ in range(size.decoder_blocks)])
            for s in range(levels)
        )
        self.heads = heads
        self.checkpointing = False

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """``{group: [(parameter name, parameter), ...]}`` for the groups of :data:`PARAMETER_GROUPS`."""
        modules = {
            "stem": [self.stem],
            "encoder": [self.encoder],
            "bottleneck": [self.bottleneck],
            "decoder": [self.up, self.decoder],
            "heads": [self.heads],
        }
        names = {id(p): n for n, p in self.named_parameters()}
        return {
            group: [(names[id(p)], p) for m in ms for p in m.parameters()]
            for group, ms in modules.items()
        }

    def shard_units(self) -> list[nn.Module]:
        """The blocks FSDP shards one by one (each residual block and Transformer layer)."""
        return [m for m in self.modules() if isinstance(m, ResidualBlock | TransformerLayer)]

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in the backward pass (less memory, same outputs)."""
        self.checkpointing = enabled
        if isinstance(self.bottleneck, TransformerBottleneck):
            self.bottleneck.checkpointing = enabled

    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and self.training:
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward_features(self, x: torch.Tensor) -> Features:
        skips = []
        x = self.stem(x)
        for stage in self.encoder:
            x = self._run(stage, x)
            skips.append(x)  # (B, F_s, ...) at stage s resolution
        bottleneck = x = self.bottleneck(x)
        decoder: list[torch.Tensor] = []
        if getattr(self.heads, "uses_decoder", True):
            for s in reversed(range(len(self.up))):
                x = self.up[s](x, skips[s].shape[2:]) + skips[s]
                x = self._run(self.decoder[s], x)
                decoder.append(x)
        return Features(bottleneck, decoder[::-1])  # decoder: full resolution first

    def forward(self, x: torch.Tensor):
        return self.heads(self.forward_features(x))
