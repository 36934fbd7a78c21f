"""Segmentation losses: the partial-label loss for pools, softmax CE + Dice for one dataset."""

from medfoundry.losses.partial import partial_label_loss
from medfoundry.losses.softmax import softmax_ce_dice_loss

__all__ = ["partial_label_loss", "softmax_ce_dice_loss"]
