"""``medfoundry pretrain``: train a TSFM model on a preprocessed pool. One readable loop, no subclassing.

Run folder: ``config.yaml`` (resolved), ``plan.json``, ``labels.json``, ``splits.json``,
``metrics.jsonl``, ``tensorboard/``, ``progress.png``, ``checkpoints/{latest,best,final}.pt``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from medfoundry import MedfoundryError
from medfoundry.data.loader import BatchSpec, batch_loader
from medfoundry.data.sampler import PatchSampler
from medfoundry.data.split import split_cases
from medfoundry.device import autocast_for, bf16_native
from medfoundry.io.jsonfile import write_json
from medfoundry.losses import LOSSES
from medfoundry.models.registry import create_model
from medfoundry.models.sizes import stage_strides
from medfoundry.planning import load_plan
from medfoundry.pool import load_pool
from medfoundry.training import distributed as D
from medfoundry.training.amp_check import cpu_bf16_training_ok
from medfoundry.training.checkpoint import load_checkpoint, save_checkpoint
from medfoundry.training.config import TrainConfig, from_dict, to_dict
from medfoundry.training.freeze import apply_freeze, body_parameters
from medfoundry.training.runlog import RunLog, plot_progress
from medfoundry.training.validate import validate

log = logging.getLogger(__name__)
RUN_DATA_DIR = "target"
"""A run folder may already hold this subfolder: the preprocessed target of a fine-tuning run."""


def pretrain(
    pool_dir: str | os.PathLike | None,
    run_dir: str | os.PathLike,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    init_model=None,
) -> dict:
    """Train (or, with ``resume``, continue exactly) a run; returns the final metrics and
    the run's ``init`` report (None for a run that did not start from other weights).

    On resume the config, splits and pool folder come from the run's latest checkpoint.
    ``init_model(model) -> report dict``, when given, sets the initial weights of a new run (fine-tuning
    uses it); the report is stored in the checkpoints and as ``RUN_DIR/init.json``.
    """
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir) if resume else None
    cfg = from_dict(ckpt["config"]) if ckpt else (cfg or TrainConfig())
    if pool_dir is None:
        if not ckpt:
            raise MedfoundryError("a POOL_DIR is needed to start a run")
        pool_dir = ckpt["pool_dir"]
    pool_dir = Path(pool_dir).resolve()
    if not resume and run_dir.exists() and any(p.name != RUN_DATA_DIR for p in run_dir.iterdir()):
        raise MedfoundryError(
            f"{run_dir} is not empty: use --resume {run_dir} to continue it, or another folder"
        )
    device_kind = (
        "cuda"
        if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    dist = D.init_distributed(device_kind)
    device = D.resolve_device(cfg.device, dist)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(pool_dir, run_dir, cfg, ckpt, dist, device, progress, init_model)
    finally:
        D.cleanup(dist)


def _train(pool_dir, run_dir, cfg, ckpt, dist, device, progress, init_model=None) -> dict:
    pool, plan = load_pool(pool_dir), load_plan(pool_dir)
    labels = pool["labels"]
    num_fg = len(labels) - 1
    sigmoid = cfg.loss == "partial"
    if cfg.loss not in LOSSES:
        raise MedfoundryError(f"unknown loss '{cfg.loss}' (choose from {', '.join(LOSSES)})")
    for key, seed in (("seed", cfg.seed), ("data.split_seed", cfg.data.split_seed)):
        if seed is not None and seed < 0:
            raise MedfoundryError(f"config key '{key}': a seed is 0 or more, not {seed}")
    patch = list(cfg.patch_size or plan["patch_size_vox"])
    batch_size = int(cfg.batch_size or plan["batch_size"])
    split_seed = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
    splits = (
        ckpt["splits"] if ckpt else split_cases(pool["cases"], cfg.data.val_fraction, split_seed)
    )
    by_id = {c["id"]: c for c in pool["cases"]}
    train_cases = [by_id[i] for i in splits["train"]]
    val_cases = _val_subset([by_id[i] for i in splits["val"]], cfg.data.val_max_cases)

    # The model: the plan's stage layout when training at the plan's patch, else the plan's rule.
    strides = (
        [s["stride"] for s in plan["stages"]]
        if patch == plan["patch_size_vox"]
        else stage_strides(patch, _spacing(plan), _max_stages(cfg))
    )
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = create_model(
        cfg.model,
        plan["in_channels"],
        num_fg if sigmoid else num_fg + 1,
        patch_size=patch,
        strides=strides[: _max_stages(cfg)],
        deep_supervision=cfg.deep_supervision,
        **cfg.model_overrides,
    )
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    init_report = ckpt.get("init") if ckpt else (init_model(model) if init_model else None)
    trainable = apply_freeze(model, cfg.freeze)
    warmup_params = body_parameters(model) if cfg.head_warmup_steps else []
    model.to(device)
    # FSDP2 refuses non-contiguous parameters, so channels-last is a DDP/single-process speed-up only.
    channels_last = cfg.channels_last and not cfg.fsdp
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    net = D.wrap_model(model, dist, device, cfg.fsdp)
    opt = _optimizer(cfg, net)
    total_steps = cfg.epochs * cfg.iters_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: max(0.0, 1 - s / total_steps) ** cfg.optim.poly_power
    )
    step, best = 0, -math.inf
    if ckpt:
        _load_states(model, opt, sched, ckpt, net, cfg)
        step, best = ckpt["step"], ckpt["best_metric"]
        torch.set_rng_state(ckpt["rng"]["torch"])
    meta = {
        "model": {
            "name": cfg.model,
            "overrides": cfg.model_overrides,
            "in_channels": plan["in_channels"],
            "num_classes": num_fg if sigmoid else num_fg + 1,
            "patch_size": patch,
            "strides": model.strides,
            "deep_supervision": cfg.deep_supervision,
            "activation": "sigmoid" if sigmoid else "softmax",
        },
        "config": to_dict(cfg),
        "plan": plan,
        "labels": labels,
        "datasets": {
            n: {"local_to_global": d["local_to_global"], "modality": d["modality"]}
            for n, d in pool["datasets"].items()
        },
        "splits": splits,
        "pool_dir": str(pool_dir),
        "init": init_report,
        "trainable_parameters": trainable,
    }
    runlog = _prepare_run_dir(run_dir, meta, step) if dist.is_main else None

    spec = BatchSpec(
        patch, batch_size, num_fg, cfg.seed, cfg.data.augment, cfg.data.one_dataset_per_batch
    )
    batches = batch_loader(
        PatchSampler(str(pool_dir), train_cases, cfg.data.fg_fraction),
        spec,
        step,
        cfg.data.num_workers,
        dist.rank,
        dist.world,
    )
    loss_fn = LOSSES[cfg.loss]
    autocast = autocast_for(device, _training_amp(cfg, device, meta["model"], batch_size))
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc="pretrain",
        unit="step",
        disable=not (progress and dist.is_main),
    )
    wait_sum = time_sum = 0.0
    last = {}
    net.train()
    while step < total_steps:
        t0 = time.perf_counter()
        batch = next(batches)  # made in background workers; the wait is the data-loading cost
        t_data = time.perf_counter() - t0
        image, label, valid = (
            batch[k].to(device, non_blocking=True) for k in ("image", "label", "valid")
        )
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        with autocast:
            out = net(image)
        loss = _loss(loss_fn, out, label, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step < cfg.head_warmup_steps:  # head warm-up: the body keeps its weights
            for p in warmup_params:  # (SGD skips parameters whose grad is None)
                p.grad = None
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
        opt.step()
        sched.step()
        step += 1
        dt = time.perf_counter() - t0
        wait_sum, time_sum = wait_sum + t_data, time_sum + dt
        last = {
            "kind": "train",
            "step": step,
            "epoch": (step - 1) // cfg.iters_per_epoch + 1,
            "loss": round(loss.item(), 6),
            "lr": sched.get_last_lr()[0],
            "step_time_s": round(dt, 4),
            "data_wait_frac": round(t_data / dt, 4),
        }
        if device.type == "cuda":  # peak since the run started, GiB
            last["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        bar.update()
        bar.set_postfix(loss=f"{last['loss']:.4f}", wait=f"{wait_sum / time_sum:.0%}")
        end_of_epoch = step % cfg.iters_per_epoch == 0
        if dist.is_main:
            runlog.write(last)
        if end_of_epoch and cfg.val_every and (step // cfg.iters_per_epoch) % cfg.val_every == 0:
            best = _validate_and_save(
                model,
                net,
                opt,
                sched,
                meta,
                step,
                best,
                dist,
                run_dir,
                runlog,
                pool_dir,
                val_cases,
                labels,
                patch,
                sigmoid,
                wait_sum / time_sum,
            )
        elif end_of_epoch or step % cfg.ckpt_every_steps == 0:
            _save(
                run_dir / "checkpoints" / "latest.pt",
                model,
                net,
                opt,
                sched,
                meta,
                step,
                best,
                dist,
                cfg,
            )
    bar.close()
    _save(run_dir / "checkpoints" / "final.pt", model, net, opt, sched, meta, step, best, dist, cfg)
    _save(
        run_dir / "checkpoints" / "latest.pt", model, net, opt, sched, meta, step, best, dist, cfg
    )
    if dist.is_main:
        runlog.close()
        plot_progress(run_dir)
    return {
        **last,
        "best_val_mean": best,
        "weights_sha256": _weights_sha(model, net, opt, cfg, dist),
        "data_wait_frac_mean": round(wait_sum / max(time_sum, 1e-9), 4),
        "run_dir": str(run_dir),
        "init": init_report,
    }


def _weights_sha(model, net, opt, cfg, dist) -> str:
    """A digest of this rank's full weights (DDP ranks must agree)."""
    import hashlib

    state, _ = _full_states(model, net, opt, cfg, dist, every_rank=True)
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _loss(loss_fn, out, label, valid):
    """Deep supervision: lower-resolution outputs against nearest-downsampled labels, weights 1/2^i."""
    if not isinstance(out, list):
        return loss_fn(out.float(), label, valid)
    weights = [0.5**i for i in range(len(out))]
    total = 0.0
    for w, o in zip(weights, out, strict=True):
        lab = (
            label
            if o.shape[2:] == label.shape[1:]
            else torch.nn.functional.interpolate(
                label[:, None].float(), size=o.shape[2:], mode="nearest"
            )[:, 0].long()
        )
        total = total + w * loss_fn(o.float(), lab, valid)
    return total / sum(weights)


def _validate_and_save(
    model,
    net,
    opt,
    sched,
    meta,
    step,
    best,
    dist,
    run_dir,
    runlog,
    pool_dir,
    val_cases,
    labels,
    patch,
    sigmoid,
    wait,
):
    cfg = from_dict(meta["config"])
    if dist.is_main:
        t = time.perf_counter()
        scores = (
            validate(model, pool_dir, val_cases, labels, patch, sigmoid, cfg.amp)
            if val_cases
            else {}
        )
        runlog.write(
            {
                "kind": "val",
                "step": step,
                "epoch": step // cfg.iters_per_epoch,
                **scores,
                "val_time_s": round(time.perf_counter() - t, 2),
                "data_wait_frac_so_far": round(wait, 4),
            }
        )
        metric = scores.get("val/mean", -math.inf)
        log.info("step %d: validation mean Dice %s", step, f"{metric:.4f}" if scores else "n/a")
        if metric > best:
            best = metric
            _save(
                run_dir / "checkpoints" / "best.pt",
                model,
                net,
                opt,
                sched,
                meta,
                step,
                best,
                dist,
                cfg,
            )
        plot_progress(run_dir)
    _save(
        run_dir / "checkpoints" / "latest.pt", model, net, opt, sched, meta, step, best, dist, cfg
    )
    return best


def _save(path, model, net, opt, sched, meta, step, best, dist, cfg):
    model_state, opt_state = _full_states(model, net, opt, cfg, dist)
    if dist.is_main:
        save_checkpoint(
            path,
            {
                **meta,
                "state_dict": model_state,
                "optimizer": opt_state,
                "scheduler": sched.state_dict(),
                "step": step,
                "epoch": step // cfg.iters_per_epoch,
                "best_metric": best,
                "rng": {"torch": torch.get_rng_state()},
            },
        )
    D.barrier(dist)


def _full_states(model, net, opt, cfg, dist, every_rank: bool = False):
    """Unsharded model and optimizer states. Under FSDP they are gathered to rank 0 only (CPU offload),
    or to every rank with ``every_rank``."""
    if dist.enabled and cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=not every_rank)
        return get_state_dict(net, opt, options=opts)
    return model.state_dict(), opt.state_dict()


def _load_states(model, opt, sched, ckpt, net, cfg):
    if cfg.fsdp and torch.distributed.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(
            net,
            opt,
            model_state_dict=ckpt["state_dict"],
            optim_state_dict=ckpt["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
    else:
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])


def _training_amp(cfg: TrainConfig, device: torch.device, model_meta: dict, batch: int) -> bool:
    """``cfg.amp``, unless bf16 training of this network fails on this CPU (see :mod:`.amp_check`)."""
    if not (cfg.amp and device.type == "cpu" and bf16_native(device)):
        return cfg.amp
    ok, why = cpu_bf16_training_ok(model_meta, batch, cfg.threads)
    if not ok:
        log.warning("bf16 autocast is off for this run (training in fp32): %s", why)
    return ok


def _optimizer(cfg: TrainConfig, net):
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(
            [p for p in net.parameters() if p.requires_grad],
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=True,
        )
    if o.name == "adamw":
        return torch.optim.AdamW(
            [p for p in net.parameters() if p.requires_grad], lr=o.lr, weight_decay=o.weight_decay
        )
    raise MedfoundryError(f"unknown optimizer '{o.name}' (choose sgd or adamw)")


def _prepare_run_dir(run_dir: Path, meta: dict, step: int) -> RunLog:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(meta["config"], sort_keys=False))
    write_json(run_dir / "plan.json", meta["plan"])
    write_json(run_dir / "labels.json", meta["labels"])
    write_json(run_dir / "splits.json", meta["splits"])
    if meta["init"] is not None:
        write_json(run_dir / "init.json", meta["init"])
    runlog = RunLog(run_dir)
    runlog.truncate_after(step)
    return runlog


def _val_subset(cases: list[dict], per_dataset: int) -> list[dict]:
    out, seen = [], {}
    for c in cases:
        if seen.get(c["dataset"], 0) < per_dataset:
            out.append(c)
            seen[c["dataset"]] = seen.get(c["dataset"], 0) + 1
    return out


def _spacing(plan: dict) -> list[float]:
    import numpy as np

    return np.median([d["target_spacing_mm"] for d in plan["datasets"].values()], axis=0).tolist()


def _max_stages(cfg: TrainConfig) -> int:
    from medfoundry.models.sizes import get_size

    blocks = cfg.model_overrides.get("blocks_per_stage", get_size(cfg.model).blocks_per_stage)
    return len(blocks)
