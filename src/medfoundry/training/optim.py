"""The optimizer and the learning-rate schedule of a run."""

from __future__ import annotations

import torch

from medfoundry.training.config import OptimConfig

DEPTH_FROM_HEAD = {"heads": 0, "decoder": 1, "bottleneck": 2, "encoder": 3, "stem": 4}
"""How far each parameter group of ``TSFM.parameter_groups`` lies from the output (layer decay)."""


def lr_scales(o: OptimConfig) -> dict[str, float]:
    """Each parameter group's learning rate as a fraction of ``o.lr``."""
    return {
        g: 1.0 if d == 0 else o.body_lr_scale * o.layer_decay ** (d - 1)
        for g, d in DEPTH_FROM_HEAD.items()
    }


def make_optimizer(
    o: OptimConfig, net: torch.nn.Module, groups: dict[str, list] | None = None
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or AdamW over the trainable parameters of ``net``; with
    ``groups`` (the model's ``parameter_groups()``, of the wrapped parameters) and a body scale or
    layer decay below 1, one optimizer group per parameter group at its own rate."""
    if groups is None or (o.body_lr_scale == 1.0 and o.layer_decay == 1.0):
        params: list = [p for p in net.parameters() if p.requires_grad]
    else:
        scales = lr_scales(o)
        params = [
            {"params": ps, "lr": o.lr * scales[g]}
            for g, named in groups.items()
            if (ps := [p for _, p in named if p.requires_grad])
        ]
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, total_steps: int, power: float):
    """Polynomial decay to 0 at ``total_steps``: ``lr = lr0 * (1 - step / total) ** power`` (each
    group from its own ``lr0``). A run continued for longer gets the schedule of its new length
    from its current step (as nnU-Net's ``--c`` with more epochs)."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total_steps) ** power)
