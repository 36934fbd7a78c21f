"""The dataset fingerprint: per dataset, spacings, shapes and foreground intensity statistics.

It is computed from what ``pool build`` measured while validating (``pool.json`` case records and
``foreground_samples.npz``), so planning reads no image again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError


def compute_fingerprint(pool: dict, pool_dir: str | os.PathLike) -> dict:
    """Per-dataset fingerprint.

    Returns ``{dataset: {num_cases, spacings_mm (N, 3) list, cropped_shapes (N, 3) list,
    median_spacing_mm, median_cropped_shape, intensity: [per channel {mean, std, min, max, median,
    p00_5, p99_5}]}}``; spacing and shapes are in (Z, Y, X) order.
    """
    samples_path = Path(pool_dir) / "foreground_samples.npz"
    if not samples_path.is_file():
        raise MedfoundryError(
            f"{samples_path} not found: rebuild the pool with 'medfoundry pool build'"
        )
    samples = np.load(samples_path)
    out = {}
    for name, ds in pool["datasets"].items():
        cases = [c for c in pool["cases"] if c["dataset"] == name]
        if not cases:
            continue
        spacings = np.array([c["spacing"] for c in cases], dtype=np.float64)
        shapes = np.array([[b - a for a, b in c["nonzero_bbox"]] for c in cases], dtype=np.int64)
        fg = np.concatenate([samples[c["id"]] for c in cases], axis=1)  # (C, total samples)
        out[name] = {
            "num_cases": len(cases),
            "spacings_mm": spacings.tolist(),
            "cropped_shapes": shapes.tolist(),
            "median_spacing_mm": _r(np.median(spacings, axis=0)),
            "median_cropped_shape": _r(np.median(shapes, axis=0)),
            "intensity": [_intensity_stats(fg[ch]) for ch in range(ds["num_channels"])],
        }
    return out


def _intensity_stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {k: 0.0 for k in ("mean", "std", "min", "max", "median", "p00_5", "p99_5")}
    v = values.astype(np.float64)
    lo, med, hi = np.percentile(v, [0.5, 50.0, 99.5])
    return {
        "mean": _r(v.mean()),
        "std": _r(v.std()),
        "min": _r(v.min()),
        "max": _r(v.max()),
        "median": _r(med),
        "p00_5": _r(lo),
        "p99_5": _r(hi),
    }


def _r(x):
    """Round for stable, readable JSON (6 significant decimals)."""
    if np.ndim(x):
        return [round(float(v), 6) for v in np.asarray(x).ravel()]
    return round(float(x), 6)
