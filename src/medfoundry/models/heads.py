"""Heads a task puts on the TSFM backbone (torch only). A head maps :class:`Features` to outputs.

Each head kind is registered in :data:`HEADS` under the name a model description uses
(``{"kind": "segmentation", ...}``); the rest of the description is the head's keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medfoundry import MedfoundryError


@dataclass
class Features:
    """What the backbone computes for a batch ``(B, C, Z, Y, X)``."""

    bottleneck: torch.Tensor
    """``(B, F_last, z, y, x)``: the Transformer bottleneck's output at the lowest resolution."""
    decoder: list[torch.Tensor]
    """Decoder outputs from full resolution down: ``decoder[s]`` is ``(B, F_s, Z_s, Y_s, X_s)``
    (empty when the head does not use the decoder)."""


class SegmentationHead(nn.Module):
    """1x1x1 convolutions to ``num_outputs`` logits per voxel, on the full-resolution decoder features,
    and with deep supervision on every decoder level but the lowest (outputs full resolution first)."""

    uses_decoder = True

    def __init__(self, features: list[int], num_outputs: int, deep_supervision: bool = False):
        super().__init__()
        levels = len(features) - 1 if deep_supervision else 1
        self.deep_supervision = deep_supervision
        self.convs = nn.ModuleList(nn.Conv3d(features[s], num_outputs, 1) for s in range(levels))

    def forward(self, f: Features) -> torch.Tensor | list[torch.Tensor]:
        if not self.deep_supervision:
            return self.convs[0](f.decoder[0])  # (B, num_outputs, Z, Y, X)
        return [conv(x) for conv, x in zip(self.convs, f.decoder, strict=False)]


class ReconstructionHead(nn.Module):
    """A 1x1x1 convolution to ``num_outputs`` intensities per voxel (the input's channels) on the
    full-resolution decoder features: the masked-volume modelling head."""

    uses_decoder = True

    def __init__(self, features: list[int], num_outputs: int):
        super().__init__()
        self.recon = nn.Conv3d(features[0], num_outputs, 1)

    def forward(self, f: Features) -> torch.Tensor:
        return self.recon(f.decoder[0])  # (B, num_outputs, Z, Y, X)


class ConcatHead(nn.Module):
    """Several heads on the same features, their outputs concatenated along the channels, in order
    (``parts``: head descriptions, each returning one tensor): one forward pass serves two tasks."""

    uses_decoder = True

    def __init__(self, features: list[int], parts: list[dict]):
        super().__init__()
        self.parts = nn.ModuleList(build_head(p, features) for p in parts)

    def forward(self, f: Features) -> torch.Tensor:
        return torch.cat([part(f) for part in self.parts], dim=1)  # (B, sum of outputs, Z, Y, X)


class ClassificationHead(nn.Module):
    """Global average and max pooling of the bottleneck, concatenated, then LayerNorm, dropout and a
    linear layer to ``num_outputs`` logits per image: ``(B, F_last, z, y, x)`` -> ``(B, num_outputs)``.
    The decoder is not run (``uses_decoder = False``)."""

    uses_decoder = False

    def __init__(self, features: list[int], num_outputs: int, dropout: float = 0.2):
        super().__init__()
        width = 2 * features[-1]
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_outputs)

    def forward(self, f: Features) -> torch.Tensor:
        x = f.bottleneck.flatten(2)  # (B, F, z*y*x)
        pooled = torch.cat([x.mean(2), x.amax(2)], dim=1)  # (B, 2F)
        return self.fc(self.drop(self.norm(pooled)))  # (B, num_outputs)


HEADS: dict[str, type[nn.Module]] = {
    "classification": ClassificationHead,
    "segmentation": SegmentationHead,
    "reconstruction": ReconstructionHead,
    "concat": ConcatHead,
}


def build_head(spec: dict, features: list[int]) -> nn.Module:
    """The head ``spec`` describes (``kind`` + keyword arguments) for backbone ``features``."""
    if spec.get("kind") not in HEADS:
        raise MedfoundryError(f"unknown head '{spec.get('kind')}' (known: {', '.join(HEADS)})")
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    return HEADS[spec["kind"]](features, **kwargs)
