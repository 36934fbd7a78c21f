"""Intensity normalisation per channel, as planned in ``plan.json`` (see :mod:`medfoundry.planning.plan`)."""

from __future__ import annotations

import numpy as np


def normalize(image_czyx: np.ndarray, schemes: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """Normalise each channel of a cropped ``(C, Z, Y, X)`` image; returns float32 and what was applied.

    ``ct``: clip to the plan's dataset percentiles, subtract the dataset mean, divide by its std.
    ``zscore``: subtract this case's mean and divide by its std, both over voxels nonzero in any
    channel (all voxels when none is nonzero).
    """
    out = np.empty(image_czyx.shape, dtype=np.float32)
    applied = []
    mask = np.any(image_czyx != 0, axis=0)
    if not mask.any():
        mask[...] = True
    for c, scheme in enumerate(schemes):
        x = image_czyx[c].astype(np.float32, copy=False)
        if scheme["scheme"] == "ct":
            lo, hi = scheme["clip"]
            mean, std = float(scheme["mean"]), float(scheme["std"])
            np.clip(x, lo, hi, out=out[c])
            out[c] -= mean
            out[c] /= max(std, 1e-8)
        elif scheme["scheme"] == "zscore":
            vals = x[mask]
            mean, std = float(vals.mean(dtype=np.float64)), float(vals.std(dtype=np.float64))
            np.subtract(x, mean, out=out[c])
            out[c] /= max(std, 1e-8)
        else:
            raise ValueError(f"unknown normalization scheme '{scheme['scheme']}'")
        applied.append({"scheme": scheme["scheme"], "mean": round(mean, 6), "std": round(std, 6)})
    return out, applied
