"""Evaluation metrics: pure numpy functions shared by training validation and ``medfoundry evaluate``."""

from medfoundry.evaluation.accumulate import DiceAccumulator
from medfoundry.evaluation.metrics import dice_score

__all__ = ["DiceAccumulator", "dice_score"]
