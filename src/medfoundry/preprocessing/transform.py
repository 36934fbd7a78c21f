"""The per-volume preprocessing transform, shared by the cache writer and the predictor.

crop to the nonzero box -> normalise per channel -> resample to the dataset's target spacing. Arrays
are ``(C, Z, Y, X)`` images and ``(Z, Y, X)`` label maps; the returned properties are plain JSON and
hold everything needed to map a prediction back to the input geometry (:mod:`.invert`).
"""

from __future__ import annotations

import numpy as np

from medfoundry.io import Volume
from medfoundry.pool.validate import nonzero_bbox
from medfoundry.preprocessing.normalize import normalize
from medfoundry.preprocessing.resample import (
    needs_resampling,
    resample_image,
    resample_label,
    resampled_shape,
    thick_axis_of,
)


def transform_volume(
    image: Volume,
    dataset_plan: dict,
    label_zyx: np.ndarray | None = None,
    bbox: list[list[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Preprocess one image (and optionally its label map on the same grid).

    ``bbox`` is the nonzero box (computed when not given). Returns the float32 image, the resampled
    label map (or None), and the properties (geometry before and after, what normalisation applied).
    """
    if image.num_channels != len(dataset_plan["normalization"]):
        raise ValueError(
            f"image has {image.num_channels} channel(s), the plan expects {len(dataset_plan['normalization'])}"
        )
    bbox = bbox or nonzero_bbox(image.array)
    (z0, z1), (y0, y1), (x0, x1) = bbox
    img = image.array[:, z0:z1, y0:y1, x0:x1]
    lab = None if label_zyx is None else label_zyx[z0:z1, y0:y1, x0:x1]
    img, applied = normalize(img, dataset_plan["normalization"])
    cropped = list(img.shape[1:])
    target = dataset_plan["target_spacing_mm"]
    resampled = needs_resampling(cropped, image.spacing_mm, target)
    if resampled:
        new_shape = resampled_shape(cropped, image.spacing_mm, target)
        thick = thick_axis_of(image.spacing_mm)
        img = resample_image(img, new_shape, thick)
        lab = None if lab is None else resample_label(lab, new_shape, thick)
    props = {
        "original_geometry": image.geometry(),
        "nonzero_bbox": bbox,
        "cropped_shape_zyx": cropped,
        "original_spacing_mm": [float(s) for s in image.spacing_mm],
        "target_spacing_mm": target,
        "resampled": bool(resampled),
        "shape_zyx": list(img.shape[1:]),
        "normalization": applied,
    }
    return np.ascontiguousarray(img, dtype=np.float32), lab, props
