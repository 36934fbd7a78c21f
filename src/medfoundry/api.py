"""The Python API: one function per CLI subcommand.

=====================================  ==================================================
``medfoundry synth -o DIR``             :func:`write_synthetic_datasets`
``medfoundry pool build POOL.yaml -o``  :func:`build_pool`
``medfoundry pool show POOL_DIR``       :func:`load_pool`
``medfoundry plan POOL_DIR``            :func:`make_plan`
``medfoundry preprocess POOL_DIR``      :func:`preprocess_pool`
``medfoundry models list``              :func:`list_models`
``medfoundry models info NAME``         :func:`describe_model`
``medfoundry pretrain POOL_DIR -o RUN``  :func:`pretrain` (config: :class:`TrainConfig`)
``medfoundry finetune --from --data``   :func:`finetune`
``medfoundry predict -m -i -o``         :class:`Predictor` (``from_checkpoint``) + :func:`predict_paths`
``medfoundry evaluate PRED REF``        :func:`evaluate_folders`
``medfoundry run``                      :func:`run_pipeline`
=====================================  ==================================================
"""

from typing import TYPE_CHECKING

from medfoundry import MedfoundryError
from medfoundry.evaluation.evaluate import evaluate_folders
from medfoundry.io import read_image, read_label, read_volume, write_volume
from medfoundry.planning import load_plan, make_plan
from medfoundry.pool import build_pool, load_pool
from medfoundry.preprocessing import invert_label, load_case, preprocess_pool
from medfoundry.synth import write_synthetic_datasets
from medfoundry.workflows.main_job import run_pipeline

if TYPE_CHECKING:  # torch-backed names, imported on first use (see __getattr__)
    from medfoundry.inference.predict_files import predict_paths
    from medfoundry.inference.predictor import Predictor
    from medfoundry.models.info import describe_model
    from medfoundry.models.registry import create_model, list_models
    from medfoundry.training.config import TrainConfig, apply_overrides
    from medfoundry.training.fit import pretrain
    from medfoundry.transfer.finetune import finetune

__all__ = [
    "MedfoundryError",
    "Predictor",
    "evaluate_folders",
    "finetune",
    "predict_paths",
    "TrainConfig",
    "apply_overrides",
    "build_pool",
    "create_model",
    "describe_model",
    "list_models",
    "pretrain",
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


def __getattr__(name: str):
    """Torch-backed functions are imported on first use, so data-only work never loads torch."""
    lazy = {
        "create_model": "medfoundry.models.registry",
        "list_models": "medfoundry.models.registry",
        "describe_model": "medfoundry.models.info",
        "pretrain": "medfoundry.training.fit",
        "TrainConfig": "medfoundry.training.config",
        "apply_overrides": "medfoundry.training.config",
        "finetune": "medfoundry.transfer.finetune",
        "Predictor": "medfoundry.inference.predictor",
        "predict_paths": "medfoundry.inference.predict_files",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(name)
