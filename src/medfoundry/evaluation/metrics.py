"""Pure metric functions on boolean masks (numpy + scipy only). Masks are ``(Z, Y, X)``, spacing is
``(Z, Y, X)`` in mm.

Conventions (the same for every metric, and for training validation):

- reference and prediction both empty: every metric is undefined (NaN) and left out of means;
- exactly one of them empty: Dice, IoU and surface Dice are 0; HD95 is undefined (NaN: there is no
  surface to measure from) and left out of means, counted in the summary's ``undefined`` counts;
- surfaces are the mask voxels with at least one 6-connected neighbour outside the mask (voxels on the
  image border count as surface); surface distances are Euclidean, in mm, between surface voxel centres.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

NAN = float("nan")


def dice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice ``2|P & R| / (|P| + |R|)`` of two boolean masks of one shape; NaN when both are empty."""
    p, r = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    denom = int(p.sum()) + int(r.sum())
    if denom == 0:
        return NAN
    return 2.0 * int(np.logical_and(p, r).sum()) / denom


def iou_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union ``|P & R| / |P | R|``; NaN when both are empty."""
    p, r = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    union = int(np.logical_or(p, r).sum())
    return NAN if union == 0 else int(np.logical_and(p, r).sum()) / union


def volume_ml(mask: np.ndarray, spacing_mm) -> float:
    """Volume of a mask in millilitres (1 ml = 1000 mm^3)."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing_mm)) / 1000.0


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing_mm
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``pred`` to the surface of ``ref``, and the reverse.

    Both masks must be non-empty. Works on the bounding box of the union padded by one empty voxel,
    which leaves every distance unchanged (the nearest surface voxel lies inside the box) and makes the
    image border behave as outside.
    """
    p, r = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    box = ndimage.find_objects((p | r).astype(np.uint8))[0]
    p, r = np.pad(p[box], 1), np.pad(r[box], 1)
    ps, rs = _surface(p), _surface(r)
    sampling = [float(s) for s in spacing_mm]
    to_ref = ndimage.distance_transform_edt(~rs, sampling=sampling)[ps]
    to_pred = ndimage.distance_transform_edt(~ps, sampling=sampling)[rs]
    return to_ref, to_pred


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def hd95_mm(pred: np.ndarray, ref: np.ndarray, spacing_mm) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm): the larger of the two directed 95th
    percentiles of surface distances; NaN when either mask is empty."""
    if not np.any(pred) or not np.any(ref):
        return NAN
    a, b = surface_distances(pred, ref, spacing_mm)
    return float(max(np.percentile(a, 95), np.percentile(b, 95)))


def surface_dice(pred: np.ndarray, ref: np.ndarray, spacing_mm, tolerance_mm: float) -> float:
    """Normalised surface Dice at a tolerance (Nikolov et al. 2021): the fraction of both surfaces that
    lies within ``tolerance_mm`` of the other surface. NaN when both are empty, 0 when one is."""
    has_p, has_r = bool(np.any(pred)), bool(np.any(ref))
    if not (has_p or has_r):
        return NAN
    if not (has_p and has_r):
        return 0.0
    a, b = surface_distances(pred, ref, spacing_mm)
    return float((np.sum(a <= tolerance_mm) + np.sum(b <= tolerance_mm)) / (a.size + b.size))


def all_metrics(pred: np.ndarray, ref: np.ndarray, spacing_mm, tolerance_mm: float) -> dict:
    """Every per-class metric of ``medfoundry evaluate`` for one pair of boolean masks."""
    return {
        "dice": dice_score(pred, ref),
        "iou": iou_score(pred, ref),
        "surface_dice": surface_dice(pred, ref, spacing_mm, tolerance_mm),
        "hd95_mm": hd95_mm(pred, ref, spacing_mm),
        "ref_volume_ml": volume_ml(ref, spacing_mm),
        "pred_volume_ml": volume_ml(pred, spacing_mm),
    }
