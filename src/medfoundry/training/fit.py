"""``medfoundry pretrain``: train a task on a preprocessed pool into a run folder. One loop, read top to
bottom in :func:`fit`; the pieces are :mod:`.setup` (what a run is made of), :mod:`.step` (one step),
:mod:`.validate` and :class:`~medfoundry.runs.run_folder.CheckpointWriter` (the files)."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from medfoundry import MedfoundryError
from medfoundry.runs.checkpoint import checkpoint_path, find_checkpoint, load_checkpoint
from medfoundry.runs.metrics import RunLog, plot_progress, read_metrics
from medfoundry.runs.run_folder import CheckpointWriter, check_new_run_dir, open_run_dir
from medfoundry.training import distributed as D
from medfoundry.training.config import TrainConfig, check_config, from_dict
from medfoundry.training.setup import Training, build_training
from medfoundry.training.step import run_steps
from medfoundry.training.validate import validate_patches, validate_volumes

log = logging.getLogger(__name__)


def pretrain(
    pool_dir: str | os.PathLike | None,
    run_dir: str | os.PathLike,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    init_model=None,
    epochs: int | None = None,
) -> dict:
    """Train (or, with ``resume``, continue exactly) the run in ``run_dir``; returns the last step's
    metrics, ``best_val_mean``, ``final_val_mean`` (whole volumes), ``init`` and ``run_dir``.

    On resume the config, splits and pool folder come from the run's latest checkpoint; ``epochs``
    (resume only) continues a run to a new length, a finished one included. ``init_model(model) ->
    report`` sets the initial weights of a new run (fine-tuning); the report is ``RUN_DIR/init.json``.
    """
    run_dir = Path(run_dir)
    if epochs is not None and not resume:
        raise MedfoundryError("epochs= continues a run to a new length: it needs resume=True")
    ckpt = load_checkpoint(run_dir, training=True) if resume else None
    cfg = _resumed_config(ckpt, epochs) if ckpt else (cfg or TrainConfig())
    check_config(cfg)
    if ckpt is None:
        check_new_run_dir(run_dir, f"use --resume {run_dir}")
    pool_dir = pool_dir or (ckpt.meta["run"]["pool_dir"] if ckpt else None)
    if pool_dir is None:
        raise MedfoundryError("a POOL_DIR is needed to start a run")
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    dist = D.init_distributed("cuda" if cuda else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        t = build_training(Path(pool_dir).resolve(), cfg, dist, ckpt, init_model)
        del ckpt  # the weights live in the model now
        return fit(t, run_dir, progress)
    finally:
        D.cleanup(dist)


def fit(t: Training, run_dir: Path, progress: bool = True) -> dict:
    """The training loop: steps, periodic validation, checkpoints, and the final validation."""
    cfg, state, main = t.cfg, t.state, t.dist.is_main
    if state.step >= t.total_steps and find_checkpoint(run_dir, "final"):
        return _result(t, run_dir, {}, None)  # a finished run, resumed: nothing to do
    writer = CheckpointWriter(run_dir)
    runlog = open_run_dir(run_dir, t.meta, state.step) if main else None
    if main:
        writer.discard("final")  # a finished run continued for longer is unfinished again
    quiet = not (progress and main)
    bar = tqdm(total=t.total_steps, initial=state.step, desc="train", unit="step", disable=quiet)
    wait = total = 0.0
    last, scores = {}, {}
    saved_at = state.step or None  # a resumed run: its latest checkpoint holds this step
    while state.step < t.total_steps:
        last = run_steps(state, t.task, t.batches, 1, t.opts)[0]
        _stop_if_not_finite(t, last, writer, saved_at)
        last = {"kind": "train", "epoch": (state.step - 1) // cfg.iters_per_epoch + 1, **last}
        total += last["step_time_s"]
        wait += last["data_wait_frac"] * last["step_time_s"]
        if t.opts.device.type == "cuda":  # peak since the run started, GiB
            last["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(t.opts.device) / 2**30, 3)
        _log(runlog, last)
        bar.update()
        bar.set_postfix(loss=f"{last['loss']:.4f}", wait=f"{wait / total:.0%}")
        epoch = state.step // cfg.iters_per_epoch if state.step % cfg.iters_per_epoch == 0 else 0
        names = ["latest"] if epoch or state.step % cfg.ckpt_every_steps == 0 else []
        scores = {}  # this step's validation, if any
        if epoch and cfg.validation.every and epoch % cfg.validation.every == 0:
            scores = _validate(t, runlog, {"mode": cfg.validation.mode}, wait / total)
            if scores.get("val/mean", -math.inf) > state.best_metric:
                state.best_metric = scores["val/mean"]
                names.append("best")
        if names:
            _save(t, writer, names)
            saved_at = state.step
    bar.close()
    full_now = cfg.validation.mode == "full" and scores  # these weights, on whole volumes
    final = _final_validation(t, runlog, scores if full_now else None)
    if saved_at == state.step:  # "latest" holds this very state: final is the same file
        _link(t, writer, "final", "latest")
    else:
        _save(t, writer, ["final", "latest"])
    if main:
        runlog.close()
        plot_progress(run_dir)
    return _result(t, run_dir, last, final.get("val/mean"), wait / total if total else None)


def _result(t: Training, run_dir: Path, last: dict, final, wait=None) -> dict:
    """``pretrain``'s result: the last step's record, the best and final validation, and more."""
    if not last:  # no step ran in this call: the figures of the log
        rows = read_metrics(run_dir)
        train = [r for r in rows if r.get("kind") == "train"]
        finals = [r for r in rows if r.get("kind") == "val" and r.get("final")]
        last = {"loss": train[-1]["loss"] if train else None}
        final = finals[-1].get("val/mean") if finals else None
    return {
        **last,
        "step": t.state.step,
        "best_val_mean": t.state.best_metric,
        "final_val_mean": final,
        "weights_sha256": t.state.weights_sha256(t.dist),
        "data_wait_frac_mean": None if wait is None else round(wait, 4),
        "run_dir": str(run_dir),
        "init": t.meta["run"]["init"],
        "metric": getattr(t.task, "metric_name", "mean Dice"),
    }


def _validate(t: Training, runlog: RunLog | None, kind: dict, wait: float, scores=None) -> dict:
    """Validate (every rank; ``kind["mode"]``: patch or full) unless ``scores`` are given, log the
    row (with ``kind``'s fields) on rank 0; returns the scores (the same on every rank)."""
    started = time.perf_counter()
    if scores is None:
        scores = validate_patches(t) if kind["mode"] == "patch" else validate_volumes(t)
    _log(
        runlog,
        {
            "kind": "val",
            **kind,
            "step": t.state.step,
            "epoch": t.state.step // t.cfg.iters_per_epoch,
            **scores,
            "val_time_s": round(time.perf_counter() - started, 2),
            "data_wait_frac_so_far": round(wait, 4),
        },
    )
    metric = getattr(t.task, "metric_name", "mean Dice")
    log.info(
        "step %d: %s validation %s %s", t.state.step, kind["mode"], metric, scores.get("val/mean")
    )
    return scores


def _final_validation(t: Training, runlog: RunLog | None, done: dict | None) -> dict:
    """Whole-volume validation of the final weights (``validation.final``), logged with
    ``final: true``; ``done``: the scores of a whole-volume validation of these weights just made."""
    if not t.cfg.validation.final or not t.source.val_cases:
        return {}
    return _validate(t, runlog, {"mode": "full", "final": True}, 0.0, done)


class NonFiniteError(MedfoundryError):
    """Training produced a non-finite loss or non-finite weights; nothing of it was saved."""


def _stop_if_not_finite(t: Training, record: dict, writer: CheckpointWriter, saved_at) -> None:
    """Every rank stops at the same step when any rank's loss is NaN or infinite (a rank that left
    alone would leave the others waiting in the next all-reduce); the last checkpoint stays."""
    bad = [r for r in D.all_gather(record["loss"], t.dist) if not math.isfinite(r)]
    if not bad:
        return
    path = checkpoint_path(writer.run_dir, "latest")
    kept = (
        f"the last good checkpoint is {path} (step {saved_at})"
        if saved_at is not None or path.is_file()
        else "no checkpoint was written"
    )
    raise NonFiniteError(
        f"step {t.state.step}: the loss is {bad[0]} (learning rate {record['lr']:g}); training "
        f"stopped and nothing of this step was saved; {kept}. Lower optim.lr or check the data."
    )


def _check_finite_weights(weights: dict, step: int) -> None:
    """A checkpoint of NaN or infinite weights is never written (it would predict garbage)."""
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(
                f"step {step}: weight '{name}' holds NaN or infinite values; training stopped and "
                "this checkpoint was not written (the previous one stays). Lower optim.lr."
            )


def _save(t: Training, writer: CheckpointWriter, names: list[str]) -> None:
    """Every rank gathers (collective under FSDP), rank 0 writes, then all learn how it went."""
    weights, optimizer = t.state.full_states(t.dist)

    def write() -> None:
        _check_finite_weights(weights, t.state.step)
        state = {**t.state.progress(), "epoch": t.state.step // t.cfg.iters_per_epoch}
        writer.save(names, {**t.meta, "state": state}, weights, optimizer, torch.get_rng_state())
        if "best" in names or "final" in names:
            plot_progress(writer.run_dir)

    _on_main(t, write)


def _link(t: Training, writer: CheckpointWriter, name: str, existing: str) -> None:
    _on_main(t, lambda: writer.link(name, existing))


def _on_main(t: Training, action) -> None:
    """Run ``action`` on rank 0; every rank then raises if it failed (instead of the others waiting
    at a barrier for a rank that left)."""
    error = None
    if t.dist.is_main:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - shared with the other ranks, then raised
            error = exc
    failures = [e for e in D.all_gather(None if error is None else repr(error), t.dist) if e]
    if error is not None:
        raise error
    if failures:
        raise MedfoundryError(f"rank 0 could not write the run's files: {failures[0]}")


def _resumed_config(ckpt, epochs: int | None) -> TrainConfig:
    """The run's own config; with ``epochs``, continued to that length (never shortened)."""
    cfg = from_dict(ckpt.meta["config"])
    if epochs is not None:
        done = ckpt.meta["state"]["step"]
        if epochs * cfg.iters_per_epoch < done:
            raise MedfoundryError(
                f"the run has trained {done} steps ({done / cfg.iters_per_epoch:g} epochs of "
                f"{cfg.iters_per_epoch}); --epochs {epochs} would end before that"
            )
        cfg.epochs = epochs
    return cfg


def _log(runlog: RunLog | None, record: dict) -> None:
    if runlog is not None:
        runlog.write(record)
