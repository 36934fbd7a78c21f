"""The Python API: one function per CLI subcommand.

=====================================  ==================================================
``medfoundry synth -o DIR``             :func:`write_synthetic_datasets`
``medfoundry pool build POOL.yaml -o``  :func:`build_pool`
``medfoundry pool show POOL_DIR``       :func:`load_pool`
``medfoundry plan POOL_DIR``            :func:`make_plan`
``medfoundry preprocess POOL_DIR``      :func:`preprocess_pool`
``medfoundry run``                      :func:`run_pipeline`
=====================================  ==================================================
"""

from medfoundry import MedfoundryError
from medfoundry.io import read_image, read_label, read_volume, write_volume
from medfoundry.pipeline import run_pipeline
from medfoundry.planning import load_plan, make_plan
from medfoundry.pool import build_pool, load_pool
from medfoundry.preprocessing import invert_label, load_case, preprocess_pool
from medfoundry.synth import write_synthetic_datasets

__all__ = [
    "MedfoundryError",
    "build_pool",
    "invert_label",
    "load_case",
    "load_plan",
    "load_pool",
    "make_plan",
    "preprocess_pool",
    "read_image",
    "read_label",
    "read_volume",
    "run_pipeline",
    "write_synthetic_datasets",
    "write_volume",
]
