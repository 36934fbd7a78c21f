"""``create_model(name, in_channels, num_classes, **overrides)``: every TSFM size behind one call."""

from __future__ import annotations

import dataclasses

import torch

from medfoundry import MedfoundryError
from medfoundry.models.sizes import MODEL_SIZES, get_size, stage_strides
from medfoundry.models.tsfm import TSFM

DEFAULT_PATCH = (128, 128, 128)
"""The canonical pretraining patch: parameter counts in `medfoundry models list` are for it."""


def create_model(
    name: str,
    in_channels: int,
    num_classes: int,
    patch_size=DEFAULT_PATCH,
    strides: list[list[int]] | None = None,
    deep_supervision: bool = False,
    device: str | torch.device | None = None,
    **overrides,
) -> TSFM:
    """Build a registered size. ``patch_size`` (Z, Y, X) sets the position-embedding grid (other patch
    sizes still work, interpolated); ``strides`` default to the plan rule for an isotropic patch.
    ``overrides`` replace :class:`~medfoundry.models.sizes.ModelSize` fields (e.g. ``transformer_depth=0``).
    ``device="meta"`` builds without allocating memory (parameter counts of huge sizes)."""
    size = get_size(name)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(size)}
    if unknown:
        raise MedfoundryError(f"unknown model override '{sorted(unknown)[0]}'")
    if "blocks_per_stage" in overrides:
        overrides["blocks_per_stage"] = tuple(overrides["blocks_per_stage"])
    size = dataclasses.replace(size, **overrides)
    patch = [int(p) for p in patch_size]
    if strides is None:
        strides = stage_strides(patch, [1.0, 1.0, 1.0], size.max_stages)
    with torch.device(device or "cpu"):
        return TSFM(size, in_channels, num_classes, strides, patch, deep_supervision)


def create_model_from_description(m: dict) -> TSFM:
    """The network a checkpoint's ``model`` entry describes (name, channels, classes, patch, strides,
    deep supervision, size overrides); weights are freshly initialised."""
    return create_model(
        m["name"],
        m["in_channels"],
        m["num_classes"],
        patch_size=m["patch_size"],
        strides=m["strides"],
        deep_supervision=m["deep_supervision"],
        **m.get("overrides", {}),
    )


def list_models() -> list[str]:
    return list(MODEL_SIZES)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
