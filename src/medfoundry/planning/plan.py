"""``medfoundry plan``: fingerprint -> ``POOL_DIR/plan.json`` (format ``medfoundry.plan/1``).

``plan.json`` holds, for the pool as a whole: ``model`` and ``memory_budget_gb`` it was planned for,
``patch_size_vox`` (Z, Y, X), ``batch_size``, ``stages`` (stride (Z, Y, X) and features per network
stage), ``estimated_memory_gb``, ``resampling`` (the interpolation used); and per dataset:
``target_spacing_mm`` (Z, Y, X), ``anisotropic``, ``median_shape_vox`` (after cropping and resampling),
``normalization`` (one entry per channel):

* ``{"scheme": "ct", "clip": [p0.5, p99.5], "mean": m, "std": s}``: clip to the dataset's foreground
  0.5/99.5 percentiles, then ``(x - m) / s`` with the dataset's foreground statistics;
* ``{"scheme": "zscore"}``: per case, ``(x - mean) / std`` over the nonzero (cropped) region.

It is deterministic: same pool, same arguments -> the same bytes. ``fingerprint.json`` beside it keeps
the full fingerprint it was computed from.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError, __version__
from medfoundry.models.sizes import get_size, stage_strides
from medfoundry.planning.fingerprint import compute_fingerprint
from medfoundry.planning.layout import check_patch_layout, plan_patch, stage_layout
from medfoundry.planning.spacing import is_anisotropic, target_spacing
from medfoundry.pool.build import load_pool
from medfoundry.utils.jsonfile import read_json, write_json

PLAN_FORMAT = "medfoundry.plan/1"
RESAMPLING = {
    "image": "cubic spline (order 3); order 1 along the thick axis of anisotropic data",
    "label": "one-hot linear, then argmax",
}


def make_plan(
    pool_dir: str | os.PathLike,
    model: str = "tsfm_s",
    memory_gb: float = 8.0,
    patch_size_vox: list[int] | None = None,
    batch_size: int | None = None,
    target_spacing_mm: dict[str, list[float]] | None = None,
) -> Path:
    """Compute the fingerprint and write ``POOL_DIR/plan.json``; returns its path.

    ``patch_size_vox``/``batch_size`` override the planned values (the stage layout follows the patch).
    ``target_spacing_mm`` maps a dataset name to the ``(Z, Y, X)`` mm spacing to resample it to instead
    of the planned one (as nnU-Net's overwrite_target_spacing): e.g. a coarser in-plane grid for a
    short CPU budget, or data whose headers lost the true spacing.
    """
    pool_dir = Path(pool_dir)
    pool = load_pool(pool_dir)
    size = get_size(model)
    if memory_gb <= 0:
        raise MedfoundryError(f"memory budget must be positive, got {memory_gb} GB")
    overrides = _check_spacing_overrides(target_spacing_mm or {}, pool["datasets"])
    fingerprint = compute_fingerprint(pool, pool_dir)
    datasets = {
        name: _dataset_plan(fp, pool["datasets"][name]["modality"], overrides.get(name))
        for name, fp in sorted(fingerprint.items())
    }

    shapes = np.array([d["median_shape_vox"] for d in datasets.values()], dtype=np.float64)
    spacing = np.median(
        np.array([d["target_spacing_mm"] for d in datasets.values()]), axis=0
    ).tolist()
    in_channels = max(d["num_channels"] for d in pool["datasets"].values())
    num_classes = len(pool["labels"])
    total_vox = sum(
        _resampled_vox(c, datasets[c["dataset"]]["target_spacing_mm"]) for c in pool["cases"]
    )
    layout = plan_patch(
        size,
        shapes.max(axis=0).tolist(),
        spacing,
        memory_gb * 2**30,
        total_vox,
        in_channels,
        num_classes,
    )
    if patch_size_vox is not None:
        layout = _fixed_patch(
            size, patch_size_vox, spacing, layout["batch_size"], in_channels, num_classes
        )
    if batch_size is not None:
        layout["batch_size"] = int(batch_size)
    plan = {
        "format": PLAN_FORMAT,
        "medfoundry_version": __version__,
        "pool": pool["name"],
        "pool_sha256": hashlib.sha256((pool_dir / "pool.json").read_bytes()).hexdigest(),
        "model": model,
        "memory_budget_gb": memory_gb,
        "in_channels": in_channels,
        "labels": pool["labels"],
        "resampling": RESAMPLING,
        "datasets": datasets,
        **layout,
    }
    write_json(pool_dir / "fingerprint.json", fingerprint)
    return write_json(pool_dir / "plan.json", plan)


def load_plan(pool_dir: str | os.PathLike) -> dict:
    """Read ``POOL_DIR/plan.json`` and check it belongs to the pool beside it."""
    pool_dir = Path(pool_dir)
    plan = read_json(pool_dir / "plan.json", "plan.json (run 'medfoundry plan' first)")
    if plan.get("format") != PLAN_FORMAT:
        raise MedfoundryError(f"{pool_dir / 'plan.json'}: not a {PLAN_FORMAT} file")
    pool_sha = hashlib.sha256((pool_dir / "pool.json").read_bytes()).hexdigest()
    if plan["pool_sha256"] != pool_sha:
        raise MedfoundryError(
            f"{pool_dir / 'plan.json'} was made for another pool.json; run 'medfoundry plan' again"
        )
    return plan


def _check_spacing_overrides(overrides: dict, datasets: dict) -> dict[str, list[float]]:
    """Checked before the (slow) fingerprint, against the pool's dataset names."""
    unknown = sorted(set(overrides) - set(datasets))
    if unknown:
        raise MedfoundryError(
            f"target spacing given for {', '.join(unknown)}, not a dataset of this pool "
            f"({', '.join(sorted(datasets))})"
        )
    for name, spacing in overrides.items():
        if len(spacing) != 3 or not all(np.isfinite(v) and v > 0 for v in spacing):
            raise MedfoundryError(
                f"target spacing for {name} must be three positive numbers (Z Y X mm), got {list(spacing)}"
            )
    return {name: [float(v) for v in spacing] for name, spacing in overrides.items()}


def _dataset_plan(fp: dict, modalities: list[str], spacing: list[float] | None = None) -> dict:
    """One dataset's entry of plan.json; ``spacing`` replaces the planned target spacing."""
    if spacing is None:
        spacing = target_spacing(np.array(fp["spacings_mm"]), np.array(fp["cropped_shapes"]))
    shapes = (
        np.array(fp["cropped_shapes"], dtype=np.float64)
        * np.array(fp["spacings_mm"])
        / np.array(spacing)
    )
    return {
        "target_spacing_mm": spacing,
        "anisotropic": is_anisotropic(spacing),
        "median_shape_vox": [round(float(v), 3) for v in np.median(shapes, axis=0)],
        "num_channels": len(modalities),
        "normalization": [
            _normalization(m, stats) for m, stats in zip(modalities, fp["intensity"], strict=True)
        ],
    }


def _normalization(modality: str, stats: dict) -> dict:
    if modality.strip().upper() == "CT":
        return {
            "scheme": "ct",
            "clip": [stats["p00_5"], stats["p99_5"]],
            "mean": stats["mean"],
            "std": max(stats["std"], 1e-8),
        }
    return {"scheme": "zscore"}


def _resampled_vox(case: dict, target: list[float]) -> float:
    shape = np.array([b - a for a, b in case["nonzero_bbox"]], dtype=np.float64)
    return float(np.prod(shape * np.array(case["spacing"]) / np.array(target)))


def _fixed_patch(size, patch, spacing, batch, in_channels, num_classes) -> dict:
    if len(patch) != 3 or min(patch) < 1:
        raise MedfoundryError(f"patch size must be three positive integers (Z Y X), got {patch}")
    strides = stage_strides(list(patch), spacing, size.max_stages)
    check_patch_layout(list(patch), strides)
    return {
        "patch_size_vox": [int(p) for p in patch],
        "batch_size": batch,
        **stage_layout(size, list(patch), strides, batch, in_channels, num_classes),
    }
