"""Softmax cross-entropy + Dice for single-dataset training (nnU-Net's default loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1e-5


def softmax_ce_dice_loss(
    logits: torch.Tensor, label: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """``CE + (1 - mean foreground batch Dice)``.

    Args:
        logits: ``(B, K + 1, Z, Y, X)``, channel 0 background.
        label: ``(B, Z, Y, X)`` integer ids 0..K.
        valid: ignored (every class is annotated in a single dataset); accepted for a common signature.
    """
    ce = F.cross_entropy(logits, label)
    prob = torch.softmax(logits, 1)[:, 1:].flatten(2)  # (B, K, V)
    tgt = F.one_hot(label, logits.shape[1]).movedim(-1, 1)[:, 1:].flatten(2).to(prob.dtype)
    inter = (prob * tgt).sum((0, 2))
    dice = (2 * inter + SMOOTH) / (prob.sum((0, 2)) + tgt.sum((0, 2)) + SMOOTH)
    return ce + (1 - dice).mean()
