"""Evaluation metrics: pure numpy functions shared by training validation and ``medfoundry evaluate``."""

from medfoundry.evaluation.metrics import dice_score

__all__ = ["dice_score"]
