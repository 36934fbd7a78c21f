"""Everything a checkpoint restores, in one object."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from medfoundry.runs.checkpoint import Checkpoint
from medfoundry.training.distributed import DistInfo


@dataclass
class TrainState:
    """The model and what moves it: optimizer, schedule, step and the best validation metric so far.

    ``model`` is the network itself (its weights are what is saved); ``net`` is what the forward
    pass runs: ``model``, or its DDP wrapper, or (FSDP) the same module sharded in place.
    """

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0
    best_metric: float = -math.inf
    sharded: bool = False
    """True under FSDP: full states are gathered with collective calls on every rank."""

    def full_states(self, dist: DistInfo, every_rank: bool = False) -> tuple[dict, dict]:
        """Unsharded weights and optimizer state. Under FSDP every rank must call this; the states
        are gathered to rank 0 only (CPU offload), or to every rank with ``every_rank``."""
        if dist.enabled and self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            opts = StateDictOptions(full_state_dict=True, cpu_offload=not every_rank)
            return get_state_dict(self.net, self.optimizer, options=opts)
        return self.model.state_dict(), self.optimizer.state_dict()

    def progress(self) -> dict:
        """The JSON part of the state (a checkpoint's ``state``)."""
        return {
            "step": self.step,
            "best_metric": self.best_metric,
            "scheduler": self.scheduler.state_dict(),
        }

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue exactly from a training checkpoint (loaded with ``training=True``)."""
        if self.sharded and torch.distributed.is_initialized():
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(
                self.net,
                self.optimizer,
                model_state_dict=ckpt.weights,
                optim_state_dict=ckpt.optimizer,
                options=StateDictOptions(full_state_dict=True),
            )
        else:
            self.model.load_state_dict(ckpt.weights)
            self.optimizer.load_state_dict(ckpt.optimizer)
        state = ckpt.meta["state"]
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best_metric = state["step"], state["best_metric"]
        torch.set_rng_state(ckpt.rng)

    def follow_schedule(self) -> None:
        """Set the learning rates the schedule gives at ``step`` (a run continued to a new length:
        its restored rates are the old schedule's)."""
        s = self.scheduler
        for group, base, factor in zip(
            self.optimizer.param_groups, s.base_lrs, s.lr_lambdas, strict=True
        ):
            group["lr"] = base * factor(self.step)

    def weights_sha256(self, dist: DistInfo) -> str:
        """A digest of the full weights on this rank (every rank of a run must agree)."""
        if dist.enabled and self.sharded:  # gathers the weights only, not the optimizer state
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            weights = get_model_state_dict(self.net, options=StateDictOptions(full_state_dict=True))
        else:
            weights = self.model.state_dict()
        h = hashlib.sha256()
        for k in sorted(weights):
            h.update(k.encode())
            h.update(weights[k].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
