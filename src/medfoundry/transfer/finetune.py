"""``medfoundry finetune``: adapt a pretrained checkpoint to a new dataset with the pretraining engine.

The target is planned and preprocessed with its own fingerprint (spacing, normalisation, patch) into
``RUN_DIR/target/`` (or an already preprocessed pool folder is used as it is), the model is built for
the target's labels, every compatible pretrained weight is loaded (:mod:`.weights`; the report is
``RUN_DIR/init.json``), and :func:`medfoundry.training.fit.pretrain` trains it: checkpoints, resume,
metrics and validation are the pretraining engine's.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.planning import load_plan, make_plan
from medfoundry.pool import build_pool, load_pool
from medfoundry.pool.spec import PoolSpec, pool_spec_from_dict
from medfoundry.preprocessing import preprocess_pool
from medfoundry.runs.checkpoint import find_checkpoint, load_checkpoint, resolve_checkpoint
from medfoundry.runs.run_folder import RUN_DATA_DIR, check_new_run_dir
from medfoundry.tasks import task_from_config
from medfoundry.training.config import TrainConfig, check_config, from_dict
from medfoundry.training.fit import pretrain
from medfoundry.transfer.weights import only_groups, segmentation_part, transfer_weights

log = logging.getLogger(__name__)


def prepare_target(
    data: str | os.PathLike | PoolSpec,
    pool_dir: str | os.PathLike,
    model: str,
    memory_gb: float = 8.0,
    patch_size_vox: list[int] | None = None,
    jobs: int = 1,
    progress: bool = True,
    spacing_mm: list[float] | None = None,
) -> Path:
    """Pool, plan and preprocess a target dataset (a dataset folder in nnU-Net, MSD or plain layout
    with a ``dataset.json``, a one-dataset pool file or :class:`PoolSpec`) into ``pool_dir``. A folder that already is a
    preprocessed pool (``pool.json`` + ``plan.json``) is returned as it is. ``spacing_mm``: the
    (Z, Y, X) mm grid to resample to instead of the planned one."""
    if isinstance(data, PoolSpec):
        spec: object = data
    elif (Path(data) / "pool.json").is_file() and (Path(data) / "plan.json").is_file():
        return Path(data)
    elif (data := Path(data)).is_file() and data.suffix in (".yaml", ".yml"):
        spec = data
    elif data.is_dir():
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", data.resolve().name)
        spec = pool_spec_from_dict(
            {"name": name, "datasets": [{"name": name, "root": str(data.resolve())}]},
            base_dir=data.resolve().parent,
        )
    else:
        raise MedfoundryError(f"{data}: not a dataset folder, pool file or preprocessed pool")
    pool_dir = Path(pool_dir)
    build_pool(spec, pool_dir, jobs=jobs, progress=progress)
    if len(load_pool(pool_dir)["datasets"]) != 1:
        raise MedfoundryError(f"{data}: fine-tuning needs exactly one target dataset")
    name = load_pool(pool_dir)["datasets"].keys()
    spacing = {n: list(spacing_mm) for n in name} if spacing_mm else None
    make_plan(pool_dir, model, memory_gb, patch_size_vox, target_spacing_mm=spacing)
    preprocess_pool(pool_dir, jobs=jobs, progress=progress)
    return pool_dir


def finetune_config(source: dict, cfg: TrainConfig | None = None) -> TrainConfig:
    """The source's model size and overrides (the weights must fit) on ``cfg``; without ``cfg``, the
    fine-tuning defaults: 50 epochs (5% of an nnU-Net schedule) and the source's loss."""
    src = from_dict(source["config"])
    if cfg is None:
        cfg = TrainConfig(epochs=50, loss=src.loss, deep_supervision=src.deep_supervision)
    cfg.model, cfg.model_overrides = src.model, dict(src.model_overrides)
    return cfg


def finetune(
    source: str | os.PathLike,
    data: str | os.PathLike | PoolSpec,
    run_dir: str | os.PathLike,
    cfg: TrainConfig | None = None,
    memory_gb: float = 8.0,
    jobs: int = 1,
    progress: bool = True,
) -> dict:
    """Fine-tune ``source`` (a model file, a checkpoint, or a run folder: its best, else final, else
    latest checkpoint) on ``data`` into ``run_dir``; returns :func:`pretrain`'s result plus ``init``
    (what was loaded, adapted, skipped and newly initialised)."""
    run_dir = Path(run_dir)
    if cfg is not None:
        check_config(cfg)  # a bad value fails before anything is read or written
    check_new_run_dir(run_dir, f"use 'medfoundry pretrain --resume {run_dir}'")
    ckpt_path = resolve_checkpoint(source)
    source_meta = load_checkpoint(ckpt_path, weights=False).meta  # the weights are read when used
    cfg = finetune_config(source_meta, cfg)
    cfg.init_from = str(ckpt_path.resolve())
    pool_dir = prepare_target(
        data, run_dir / RUN_DATA_DIR, cfg.model, memory_gb, cfg.patch_size, jobs, progress
    )
    src_channels = source_meta["task"]["outputs"]["channels"]
    source_prompts = source_meta["model"]["in_channels"] - source_meta["plan"]["in_channels"]
    in_channels = load_plan(pool_dir)["in_channels"]
    tgt_channels = task_from_config(
        cfg, load_pool(pool_dir)["labels"], in_channels
    ).outputs.channels

    def init_model(model) -> dict:
        weights = load_checkpoint(ckpt_path).weights  # dropped once copied into the model
        channels = list(src_channels)
        if cfg.task in ("segmentation", "promptable"):  # a supervised + SSL source: its seg. head
            weights, channels = segmentation_part(weights, source_meta["model"]["head"], channels)
        weights = only_groups(weights, model.parameter_groups(), cfg.init_groups)
        prompts = (source_prompts, model.description["in_channels"] - in_channels)
        report = transfer_weights(model, weights, channels, list(tgt_channels), prompts)
        report["source"] = cfg.init_from
        c = report["counts"]
        log.info(
            "transfer: loaded %.2fM, adapted %.2fM, interpolated %.2fM, skipped %.2fM, new %.2fM "
            "parameters; head kept %s, new %s",
            *(c[k] / 1e6 for k in ("loaded", "adapted", "interpolated", "skipped", "new")),
            report["head"]["kept"] or "none",
            report["head"]["new"] or "none",
        )
        return report

    return pretrain(pool_dir, run_dir, cfg, progress=progress, init_model=init_model)


def train_or_resume(
    run_dir: Path,
    pool_dir: Path | PoolSpec | str | None,
    cfg: TrainConfig,
    source: Path | None = None,
    progress: bool = True,
    jobs: int = 1,
) -> Path:
    """Reuse a finished run, resume an interrupted one, else start it: fine-tuned from ``source`` when
    given (``pool_dir`` may then be any target :func:`finetune` accepts), else from random weights."""
    if find_checkpoint(run_dir, "final"):
        return run_dir
    if find_checkpoint(run_dir, "latest"):
        pretrain(None, run_dir, resume=True, progress=progress)
    elif source is not None:
        finetune(source, pool_dir, run_dir, cfg, jobs=jobs, progress=progress)
    else:
        pretrain(pool_dir, run_dir, cfg, progress=progress)
    return run_dir
