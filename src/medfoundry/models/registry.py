"""``create_model(name, in_channels, num_classes, **overrides)``: every TSFM size behind one call, and
:func:`create_model_from_description`, the network a saved model description names."""

from __future__ import annotations

import dataclasses

import torch

from medfoundry import MedfoundryError
from medfoundry.models.sizes import MODEL_SIZES, get_size, stage_strides
from medfoundry.models.tsfm import TSFM

DEFAULT_PATCH = (128, 128, 128)
"""The canonical pretraining patch: parameter counts in `medfoundry models list` are for it."""


def create_network(
    name: str,
    in_channels: int,
    head: dict,
    patch_size=DEFAULT_PATCH,
    strides: list[list[int]] | None = None,
    device: str | torch.device | None = None,
    **overrides,
) -> TSFM:
    """Build a registered size with the head ``head`` describes (``{"kind": ..., **kwargs}``, see
    :mod:`medfoundry.models.heads`). ``patch_size`` (Z, Y, X) sets the position-embedding grid (other
    patch sizes still work, interpolated); ``strides`` default to the plan rule for an isotropic
    patch. ``overrides`` replace :class:`~medfoundry.models.sizes.ModelSize` fields (e.g.
    ``transformer_depth=0``). ``device="meta"`` builds without allocating memory."""
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
        model = TSFM(size, in_channels, strides, patch, head)
    model.description = {  # what create_model_from_description rebuilds it from
        "name": name,
        "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
        "in_channels": int(in_channels),
        "patch_size": patch,
        "strides": model.strides,
        "head": dict(head),
    }
    return model


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
    """A segmentation network: :func:`create_network` with a ``num_classes``-channel segmentation head."""
    head = {
        "kind": "segmentation",
        "num_outputs": num_classes,
        "deep_supervision": deep_supervision,
    }
    return create_network(name, in_channels, head, patch_size, strides, device, **overrides)


def create_model_from_description(m: dict, device: str | torch.device | None = None) -> TSFM:
    """The network a description names (``model.description`` of a built one: size, overrides,
    channels, patch, strides, head); weights are freshly initialised (on ``device``; ``"meta"``
    allocates nothing, for loading weights into)."""
    return create_network(
        m["name"],
        m["in_channels"],
        m["head"],
        patch_size=m["patch_size"],
        strides=m["strides"],
        device=device,
        **m.get("overrides", {}),
    )


def list_models() -> list[str]:
    return list(MODEL_SIZES)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
