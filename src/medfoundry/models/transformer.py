"""The Transformer bottleneck (ViT style): tokens are the voxels of the lowest-resolution feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, W)
        b, t, w = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, W/H)
        return self.out(y.transpose(1, 2).reshape(b, t, w))


class TransformerLayer(nn.Module):
    """Pre-norm encoder layer: ``x + attn(LN(x))``, then ``x + MLP(LN(x))`` (GELU)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerBottleneck(nn.Module):
    """Project CNN features to tokens, add learned position embeddings, run ``depth`` layers, project back.

    The position embedding is learned for the pretraining token grid ``grid_zyx``; another grid (another
    patch size) uses it trilinearly interpolated (:func:`interpolate_pos_embed`).
    """

    def __init__(
        self, channels: int, width: int, depth: int, heads: int, mlp_ratio: float, grid_zyx
    ) -> None:
        super().__init__()
        self.grid_zyx = tuple(int(g) for g in grid_zyx)
        self.proj_in = nn.Linear(channels, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, width, *self.grid_zyx))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.layers = nn.ModuleList(TransformerLayer(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, channels)
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, z, y, x) -> same
        b, c, *grid = x.shape
        pos = interpolate_pos_embed(self.pos_embed, grid)  # (1, W, z, y, x)
        tokens = self.proj_in(x.flatten(2).transpose(1, 2)) + pos.flatten(2).transpose(
            1, 2
        )  # (B, T, W)
        for layer in self.layers:
            if self.checkpointing and self.training:
                tokens = torch.utils.checkpoint.checkpoint(layer, tokens, use_reentrant=False)
            else:
                tokens = layer(tokens)
        y = self.proj_out(self.norm(tokens)).transpose(1, 2).reshape(b, c, *grid)
        return x + y


def interpolate_pos_embed(pos: torch.Tensor, grid_zyx) -> torch.Tensor:
    """Position embedding ``(1, W, z, y, x)`` resized to another token grid (trilinear)."""
    if tuple(pos.shape[2:]) == tuple(grid_zyx):
        return pos
    return F.interpolate(pos, size=tuple(grid_zyx), mode="trilinear", align_corners=False)
