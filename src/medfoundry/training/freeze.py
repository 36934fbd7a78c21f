"""Which parameters train: freeze policies and the head warm-up, by the model's own parameter groups
(``stem``, ``encoder``, ``bottleneck``, ``decoder``, ``heads``; see ``TSFM.parameter_groups``)."""

from __future__ import annotations

from torch import nn

TRAINED = {
    "none": ("stem", "encoder", "bottleneck", "decoder", "heads"),
    "encoder": ("bottleneck", "decoder", "heads"),
    "all-but-bottleneck": ("bottleneck", "heads"),
    "head-only": ("heads",),
}
"""The groups each policy trains (heads always)."""


def apply_freeze(model: nn.Module, policy: str) -> dict[str, int]:
    """Set ``requires_grad`` by policy; returns ``{"trainable": n, "frozen": n}`` parameter counts."""
    counts = {"trainable": 0, "frozen": 0}
    for group, params in model.parameter_groups().items():
        for _, p in params:
            p.requires_grad_(group in TRAINED[policy])
            counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts


def body_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every trainable parameter outside the heads (their gradients are dropped during warm-up)."""
    groups = model.parameter_groups()
    return [p for g, ps in groups.items() if g != "heads" for _, p in ps if p.requires_grad]
