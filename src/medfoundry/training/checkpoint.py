"""Self-describing checkpoints, written atomically.

A checkpoint (``torch.save`` of a dict, format ``medfoundry.checkpoint/1``) holds: ``model`` (name,
in_channels, num_classes, patch_size, strides, deep_supervision, output ``activation``), ``state_dict``,
``optimizer``, ``scheduler``, ``step``, ``epoch``, ``best_metric``, ``rng`` (torch CPU state; batches
are a pure function of (seed, step), so that and ``step`` are the whole sampler state), ``config``,
``plan``, ``labels``, ``splits`` and ``medfoundry_version``: enough to rebuild the model and to
predict without the pool, or to resume exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from medfoundry import MedfoundryError, __version__
from medfoundry.io.atomic import atomic_path

CHECKPOINT_FORMAT = "medfoundry.checkpoint/1"


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "medfoundry_version": __version__, **payload}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint file, or the ``latest.pt`` of a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise MedfoundryError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged file is a user-facing error
        raise MedfoundryError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise MedfoundryError(f"{path}: not a {CHECKPOINT_FORMAT} file")
    return ckpt
