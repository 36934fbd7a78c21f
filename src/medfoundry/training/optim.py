"""The optimizer and the learning-rate schedule of a run."""

from __future__ import annotations

import torch

from medfoundry.training.config import OptimConfig


def make_optimizer(o: OptimConfig, net: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or AdamW over the trainable parameters of ``net``."""
    params = [p for p in net.parameters() if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, total_steps: int, power: float):
    """Polynomial decay to 0 at ``total_steps``: ``lr = lr0 * (1 - step / total) ** power``. A run
    continued for longer gets the schedule of its new length from its current step (as nnU-Net's
    ``--c`` with more epochs)."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total_steps) ** power)
