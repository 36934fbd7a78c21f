"""The partial-label loss of TSFM / MultiTalent: per-class sigmoid BCE + batch Dice, counted only on
the classes each sample's source dataset annotates."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1e-5


def partial_label_loss(
    logits: torch.Tensor, label: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """``BCE + (1 - Dice)`` over valid (sample, class) pairs.

    Args:
        logits: ``(B, K, Z, Y, X)``, one sigmoid channel per foreground global class 1..K.
        label: ``(B, Z, Y, X)`` integer global ids (0 = background).
        valid: ``(B, K)`` bool, True where the sample's dataset annotates the class.

    BCE: the voxel mean of each valid (b, k) channel, averaged over valid pairs. Dice: for each class,
    one "batch Dice" over all samples where the class is valid (sums over those samples' voxels),
    averaged over classes valid in at least one sample. A class a sample's dataset does not annotate
    contributes nothing, so its unlabelled voxels are never pushed towards background.
    """
    b, k = logits.shape[:2]
    target = (label[:, None] == torch.arange(1, k + 1, device=label.device).view(1, k, 1, 1, 1)).to(
        logits.dtype
    )
    w = valid.to(logits.dtype)  # (B, K)
    bce = (
        F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).mean(2)
    )  # (B, K)
    bce = (bce * w).sum() / w.sum().clamp_min(1)
    prob = torch.sigmoid(logits).flatten(2)
    tgt = target.flatten(2)
    inter = ((prob * tgt).sum(2) * w).sum(0)  # (K,) over samples where valid
    denom = ((prob.sum(2) + tgt.sum(2)) * w).sum(0)
    dice = (2 * inter + SMOOTH) / (denom + SMOOTH)
    has = valid.any(0)
    dice_loss = (1 - dice[has]).mean() if has.any() else logits.sum() * 0
    return bce + dice_loss
