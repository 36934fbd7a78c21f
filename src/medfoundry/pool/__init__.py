"""Datasets, cases and the label-remapping table that fuses them into one dataset pool."""

from medfoundry.pool.build import build_pool, load_pool
from medfoundry.pool.labels import LabelSpace
from medfoundry.pool.sampling import SAMPLING_RULES, sampling_probabilities
from medfoundry.pool.spec import DatasetSpec, PoolSpec, load_pool_spec

__all__ = [
    "SAMPLING_RULES",
    "DatasetSpec",
    "LabelSpace",
    "PoolSpec",
    "build_pool",
    "load_pool",
    "load_pool_spec",
    "sampling_probabilities",
]
