"""Preprocessing: crop to nonzero -> normalise -> resample -> remap labels -> patch-readable cache."""

from medfoundry.preprocessing.cache import load_case, preprocessed_cases
from medfoundry.preprocessing.invert import invert_label
from medfoundry.preprocessing.run import preprocess_case, preprocess_pool

__all__ = ["invert_label", "load_case", "preprocess_case", "preprocess_pool", "preprocessed_cases"]
