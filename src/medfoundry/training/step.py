"""One training step, and k steps from an in-memory state (no run folder, no validation): what the
loop is made of, and what a federated round or another training scheme calls directly."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from medfoundry.tasks import Task
from medfoundry.training.state import TrainState


@dataclass
class StepOptions:
    device: torch.device
    autocast: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)
    """Entered around the forward pass (bf16 autocast where it is native and safe)."""
    batch_keys: tuple[str, ...] = ("image",)
    """The batch's tensors the step moves to ``device`` (the task's)."""
    channels_last: bool = False
    grad_clip: float = 0.0
    head_warmup_steps: int = 0
    """Until this step only the head learns: the body's gradients are dropped."""
    body: list[torch.nn.Parameter] = field(default_factory=list)
    """The parameters the head warm-up holds still."""


def train_step(state: TrainState, task: Task, batch: dict, opts: StepOptions) -> torch.Tensor:
    """Forward, loss, backward and update on one batch; advances ``state.step``; returns the loss."""
    batch = {
        k: v.to(opts.device, non_blocking=True) if k in opts.batch_keys else v
        for k, v in batch.items()
    }
    interact = getattr(task, "interact", None)
    if interact is not None:  # a batch that depends on the network's own answers (clicks at
        with torch.no_grad(), opts.autocast:  # its errors): the task asks it first, no gradient
            batch = interact(batch, state.net)
    image = batch["image"]  # (B, C, Z, Y, X)
    if opts.channels_last:
        image = image.contiguous(memory_format=torch.channels_last_3d)
    with opts.autocast:
        outputs = state.net(image)
    loss = task.loss(outputs, batch)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if state.step < opts.head_warmup_steps:  # the body keeps its weights
        for p in opts.body:  # (the optimizers skip parameters whose grad is None)
            p.grad = None
    if opts.grad_clip:
        torch.nn.utils.clip_grad_norm_(state.net.parameters(), opts.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    state.step += 1
    return loss.detach()


def run_steps(
    state: TrainState, task: Task, batches: Iterator[dict], num_steps: int, opts: StepOptions
) -> list[dict]:
    """``num_steps`` training steps from ``state`` (in memory); one record per step: ``step``,
    ``loss``, ``lr`` (the learning rate the step used), ``step_time_s`` and ``data_wait_frac`` (time
    waiting for the batch)."""
    records = []
    state.net.train()
    for _ in range(num_steps):
        t0 = time.perf_counter()
        batch = next(batches)  # made in background workers; the wait is the data-loading cost
        t_data = time.perf_counter() - t0
        lr = max(g["lr"] for g in state.optimizer.param_groups)  # the head's
        loss = train_step(state, task, batch, opts)
        dt = time.perf_counter() - t0
        records.append(
            {
                "step": state.step,
                "loss": round(loss.item(), 6),
                "lr": lr,
                "step_time_s": round(dt, 4),
                "data_wait_frac": round(t_data / dt, 4),
            }
        )
    return records
