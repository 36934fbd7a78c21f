"""Device helpers shared by training and inference (torch only): bf16 autocast where it is native."""

from __future__ import annotations

import torch


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
