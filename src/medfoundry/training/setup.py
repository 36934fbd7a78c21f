"""Everything a run needs before its first step, built from a preprocessed pool, a config and (when
resuming) a checkpoint: the task, the network and its training state, the batches, the validation
cases and the run's description. Nothing here reads or writes the run folder, so the same objects
serve a run folder's :func:`~medfoundry.training.fit.fit` and in-memory training
(:func:`~medfoundry.training.step.run_steps`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfoundry import MedfoundryError
from medfoundry.data.split import split_cases
from medfoundry.models.registry import create_network
from medfoundry.models.sizes import get_size, stage_strides
from medfoundry.planning import load_plan
from medfoundry.planning.layout import check_patch_layout
from medfoundry.pool import load_pool
from medfoundry.runs.checkpoint import Checkpoint
from medfoundry.tasks import BatchSource, Task, task_from_config
from medfoundry.training import distributed as D
from medfoundry.training.amp_check import cpu_bf16_training_ok
from medfoundry.training.config import TrainConfig, to_dict
from medfoundry.training.freeze import apply_freeze, body_parameters
from medfoundry.training.optim import make_optimizer, make_scheduler
from medfoundry.training.state import TrainState
from medfoundry.training.step import StepOptions
from medfoundry.utils.device import autocast_for, bf16_native

log = logging.getLogger(__name__)


@dataclass
class Training:
    cfg: TrainConfig
    task: Task
    state: TrainState
    opts: StepOptions
    batches: Iterator[dict]
    meta: dict
    """The checkpoint document: the model description and the run (see :mod:`medfoundry.runs.checkpoint`)."""
    dist: D.DistInfo
    source: BatchSource
    """The pool, the split (at most ``validation.max_cases`` validation cases per dataset), patch and
    batch size the task's batches are made from."""
    amp: bool
    """bf16 autocast (where native, and found safe for this network on this CPU)."""

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.cfg.iters_per_epoch


def build_training(
    pool_dir: Path,
    cfg: TrainConfig,
    dist: D.DistInfo,
    resume: Checkpoint | None = None,
    init_model: Callable | None = None,
) -> Training:
    """A ready run on ``pool_dir``: new (weights from ``init_model(model) -> report`` when given, else
    random) or, with ``resume``, exactly where that checkpoint left it."""
    device = D.resolve_device(cfg.device, dist)
    pool, plan = load_pool(pool_dir), load_plan(pool_dir)
    task = task_from_config(cfg, pool["labels"], plan["in_channels"])
    patch = list(cfg.patch_size or plan["patch_size_vox"])
    batch_size = int(cfg.batch_size or plan["batch_size"])
    splits = resume.meta["run"]["splits"] if resume else _split(pool, cfg)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = create_network(
        cfg.model,
        plan["in_channels"] + task.prompt_channels,
        task.head(),
        patch_size=patch,
        strides=_strides(cfg, plan, patch),
        **cfg.model_overrides,
    )
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    init_report = (
        resume.meta["run"]["init"] if resume else (init_model(model) if init_model else None)
    )
    trainable = apply_freeze(model, cfg.freeze)
    model.to(device)
    channels_last = cfg.channels_last and not cfg.fsdp  # FSDP2 refuses non-contiguous parameters
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    net = D.wrap_model(model, dist, device, cfg.fsdp)
    body = body_parameters(model) if cfg.head_warmup_steps else []  # FSDP's own, once sharded
    opt = make_optimizer(cfg.optim, net, model.parameter_groups())
    sched = make_scheduler(opt, cfg.epochs * cfg.iters_per_epoch, cfg.optim.poly_power)
    state = TrainState(model, net, opt, sched, sharded=dist.enabled and cfg.fsdp)
    if resume:
        state.restore(resume)
        if resume.meta["config"]["epochs"] != cfg.epochs:  # continued to a new length
            state.follow_schedule()
    by_id = {c["id"]: c for c in pool["cases"]}
    meta = {
        "kind": "checkpoint",
        "model": model.description,
        "task": task.describe(),
        "labels": pool["labels"],
        "datasets": {
            n: {"local_to_global": d["local_to_global"], "modality": d["modality"]}
            for n, d in pool["datasets"].items()
        },
        "plan": plan,
        "config": to_dict(cfg),
        "run": {
            "splits": splits,
            "pool_dir": str(pool_dir),
            "init": init_report,
            "trainable_parameters": trainable,
        },
    }
    amp = _training_amp(cfg, device, meta["model"], batch_size)
    opts = StepOptions(
        device=device,
        autocast=autocast_for(device, amp),
        batch_keys=task.batch_keys,
        channels_last=channels_last,
        grad_clip=cfg.optim.grad_clip,
        head_warmup_steps=cfg.head_warmup_steps,
        body=body,
    )
    source = BatchSource(
        pool_dir=pool_dir,
        train_cases=[by_id[i] for i in splits["train"]],
        val_cases=_val_subset([by_id[i] for i in splits["val"]], cfg.validation.max_cases),
        patch_size=patch,
        batch_size=batch_size,
        seed=cfg.seed,
        augment=cfg.data.augment,
        fg_fraction=cfg.data.fg_fraction,
        one_dataset_per_batch=cfg.data.one_dataset_per_batch,
        num_workers=cfg.data.num_workers,
        val_patches=cfg.validation.patches,
    )
    batches = task.train_batches(source, state.step, (dist.rank, dist.world))
    return Training(cfg, task, state, opts, batches, meta, dist, source, amp)


def _split(pool: dict, cfg: TrainConfig) -> dict[str, list[str]]:
    """The seeded per-dataset split, or the explicit one (``data.train_cases`` / ``val_cases``)."""
    train, val = cfg.data.train_cases, cfg.data.val_cases
    if train is None and val is None:
        seed = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
        return split_cases(pool["cases"], cfg.data.val_fraction, seed)
    ids = [c["id"] for c in pool["cases"]]
    known = set(ids)
    for key, given in (("data.train_cases", train), ("data.val_cases", val)):
        if unknown := [i for i in given or [] if i not in known]:
            raise MedfoundryError(f"config key '{key}': not cases of the pool: {unknown[:5]}")
    if train is None:
        train = [i for i in ids if i not in set(val)]
    if val is None:
        val = [i for i in ids if i not in set(train)]
    if both := sorted(set(train) & set(val)):
        raise MedfoundryError(f"cases both train and validate: {both[:5]}")
    if not train:
        raise MedfoundryError("config key 'data.train_cases': no training case")
    return {"train": list(train), "val": list(val)}


def _strides(cfg: TrainConfig, plan: dict, patch: list[int]) -> list[list[int]]:
    """The plan's stage layout when training at the plan's patch, else the plan's rule."""
    max_stages = len(
        cfg.model_overrides.get("blocks_per_stage", get_size(cfg.model).blocks_per_stage)
    )
    if patch == plan["patch_size_vox"]:
        return [s["stride"] for s in plan["stages"]][:max_stages]
    spacing = np.median([d["target_spacing_mm"] for d in plan["datasets"].values()], axis=0)
    strides = stage_strides(patch, spacing.tolist(), max_stages)
    check_patch_layout(patch, strides, "config key 'patch_size'")
    return strides


def _val_subset(cases: list[dict], per_dataset: int) -> list[dict]:
    out, seen = [], {}
    for c in cases:
        if seen.get(c["dataset"], 0) < per_dataset:
            out.append(c)
            seen[c["dataset"]] = seen.get(c["dataset"], 0) + 1
    return out


def _training_amp(cfg: TrainConfig, device: torch.device, model_meta: dict, batch: int) -> bool:
    """``cfg.amp``, unless bf16 training of this network fails on this CPU (see :mod:`.amp_check`)."""
    if not (cfg.amp and device.type == "cpu" and bf16_native(device)):
        return cfg.amp
    ok, why = cpu_bf16_training_ok(model_meta, batch, cfg.threads)
    if not ok:
        log.warning("bf16 autocast is off for this run (training in fp32): %s", why)
    return ok
