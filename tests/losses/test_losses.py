"""Losses against hand-computed values, including a batch mixing datasets with different valid labels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medfoundry.losses import partial_label_loss, softmax_ce_dice_loss
from medfoundry.losses.partial import SMOOTH


def _batch():
    """Two samples of 8 voxels, 3 global classes. Sample 0 (dataset A) annotates classes 1, 2;
    sample 1 (dataset B) annotates class 3 only, and its voxels of class 1 are unlabelled (0)."""
    label = torch.tensor([[1, 1, 2, 0, 0, 0, 0, 0], [3, 3, 3, 3, 0, 0, 0, 0]]).view(2, 2, 2, 2)
    valid = torch.tensor([[True, True, False], [False, False, True]])
    return label, valid


def test_partial_loss_at_zero_logits_hand_computed():
    label, valid = _batch()
    loss = partial_label_loss(torch.zeros(2, 3, 2, 2, 2), label, valid)
    bce = math.log(2)  # every valid channel: p = 0.5 everywhere
    # Batch Dice per class over samples where valid: p = 0.5 on 8 voxels.
    d1 = (2 * 0.5 * 2 + SMOOTH) / (0.5 * 8 + 2 + SMOOTH)  # class 1: sample 0 only, 2 positives
    d2 = (2 * 0.5 * 1 + SMOOTH) / (0.5 * 8 + 1 + SMOOTH)  # class 2: sample 0, 1 positive
    d3 = (2 * 0.5 * 4 + SMOOTH) / (0.5 * 8 + 4 + SMOOTH)  # class 3: sample 1, 4 positives
    expected = bce + (3 - d1 - d2 - d3) / 3
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_partial_loss_ignores_classes_a_sample_does_not_annotate():
    label, valid = _batch()
    logits = torch.randn(2, 3, 2, 2, 2, requires_grad=True)
    loss = partial_label_loss(logits, label, valid)
    loss.backward()
    assert logits.grad[0, 2].abs().sum() == 0 and logits.grad[1, :2].abs().sum() == 0
    other = logits.detach().clone()
    other[1, 0] = 50.0  # confident "class 1" on dataset B's unlabelled voxels changes nothing
    assert math.isclose(partial_label_loss(other, label, valid).item(), loss.item(), rel_tol=1e-6)


def test_partial_loss_perfect_prediction_is_near_zero():
    label, valid = _batch()
    target = (label[:, None] == torch.arange(1, 4).view(1, 3, 1, 1, 1)).float()
    loss = partial_label_loss((target * 2 - 1) * 30, label, valid)
    assert loss.item() < 1e-4


def test_softmax_ce_dice_hand_computed():
    label = torch.tensor([0, 1, 1, 2]).view(1, 1, 1, 4)
    logits = torch.zeros(1, 3, 1, 1, 4)
    loss = softmax_ce_dice_loss(logits, label)
    ce = math.log(3)
    d1 = (2 * 2 / 3 + 1e-5) / (4 / 3 + 2 + 1e-5)
    d2 = (2 * 1 / 3 + 1e-5) / (4 / 3 + 1 + 1e-5)
    assert math.isclose(loss.item(), ce + 1 - (d1 + d2) / 2, rel_tol=1e-6)
    assert math.isclose(F.cross_entropy(logits, label).item(), ce, rel_tol=1e-6)
