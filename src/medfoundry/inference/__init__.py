"""Inference: sliding-window prediction with Gaussian weighting."""

from medfoundry.inference.sliding_window import (
    compute_gaussian,
    compute_steps,
    count_tiles,
    predict_sliding_window,
)

__all__ = ["compute_gaussian", "compute_steps", "count_tiles", "predict_sliding_window"]
