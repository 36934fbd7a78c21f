"""Device helpers shared by training and inference (torch only): bf16 autocast where it is native."""

from __future__ import annotations

import torch

from medfoundry import MedfoundryError


def parse_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a device this machine has (``auto``: the GPU if any).

    Anything else, or CUDA where torch has none, is a :class:`MedfoundryError` (one line in the CLI).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise MedfoundryError(f"unknown device '{name}' (choose auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MedfoundryError(f"device '{name}' asked for, but torch sees no CUDA GPU here")
    return device


def autocast_for(device: torch.device, enabled: bool):
    """A bf16 autocast context where the device computes bf16 natively, else a no-op context."""
    from contextlib import nullcontext

    if enabled and bf16_native(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def bf16_native(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(
            getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
            or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        )
    return False
