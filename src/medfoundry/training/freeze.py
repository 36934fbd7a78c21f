"""Which parameters train: freeze policies and the head warm-up (torch only).

Parameter groups by TSFM module name: ``stem``/``encoder`` (encoder), ``bottleneck``, ``up``/
``decoder`` (decoder) and ``heads``. Heads always train.
"""

from __future__ import annotations

from torch import nn

from medfoundry import MedfoundryError

TRAINED = {
    "none": ("stem", "encoder", "bottleneck", "up", "decoder", "heads"),
    "encoder": ("bottleneck", "up", "decoder", "heads"),
    "all-but-bottleneck": ("bottleneck", "heads"),
    "head-only": ("heads",),
}


def apply_freeze(model: nn.Module, policy: str) -> dict[str, int]:
    """Set ``requires_grad`` by policy; returns ``{"trainable": n, "frozen": n}`` parameter counts."""
    if policy not in TRAINED:
        raise MedfoundryError(
            f"unknown freeze policy '{policy}' (choose from {', '.join(TRAINED)})"
        )
    counts = {"trainable": 0, "frozen": 0}
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".")[0] in TRAINED[policy])
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts


def body_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every trainable parameter outside the heads (their gradients are dropped during warm-up)."""
    return [
        p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")
    ]
