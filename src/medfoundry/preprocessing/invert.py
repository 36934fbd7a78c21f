"""Map a label map on the preprocessed grid back to the original image geometry."""

from __future__ import annotations

import numpy as np

from medfoundry.pool.labels import invert_map
from medfoundry.preprocessing.resample import resample_label, resample_linear, thick_axis_of


def invert_label(label_zyx: np.ndarray, props: dict, to_local: bool = True) -> np.ndarray:
    """Undo resampling and cropping (and, with ``to_local``, the global-id remapping).

    ``label_zyx`` is on the preprocessed grid (``props["shape_zyx"]``). Returns a ``(Z, Y, X)`` array of
    the original shape: voxels outside the crop box are background; ids are the dataset's own local ids
    (global ids with ``to_local=False``).
    """
    if list(label_zyx.shape) != list(props["shape_zyx"]):
        raise ValueError(
            f"label shape {label_zyx.shape} != preprocessed shape {props['shape_zyx']}"
        )
    lab = label_zyx
    if props["resampled"]:
        lab = resample_label(
            lab, props["cropped_shape_zyx"], thick_axis_of(props["original_spacing_mm"])
        )
    if to_local:
        g2l = invert_map({int(k): v for k, v in props["local_to_global"].items()})
        lut = np.zeros(max([*g2l, int(lab.max())]) + 1, dtype=np.int32)
        for glob, local in g2l.items():
            lut[glob] = local
        lab = lut[lab]
    out = np.zeros(
        props["original_geometry"]["shape_zyx"], dtype=np.uint8 if lab.max() < 256 else np.int32
    )
    (z0, z1), (y0, y1), (x0, x1) = props["nonzero_bbox"]
    out[z0:z1, y0:y1, x0:x1] = lab
    return out


def invert_values(map_zyx: np.ndarray, props: dict) -> np.ndarray:
    """A float map (an uncertainty or saliency map) on the preprocessed grid back to the original
    image's ``(Z, Y, X)`` grid: resampled linearly to the crop box, zero outside it (float32)."""
    if list(map_zyx.shape) != list(props["shape_zyx"]):
        raise ValueError(f"map shape {map_zyx.shape} != preprocessed shape {props['shape_zyx']}")
    m = np.asarray(map_zyx, np.float32)
    if props["resampled"]:
        m = resample_linear(m, props["cropped_shape_zyx"])
    out = np.zeros(props["original_geometry"]["shape_zyx"], np.float32)
    (z0, z1), (y0, y1), (x0, x1) = props["nonzero_bbox"]
    out[z0:z1, y0:y1, x0:x1] = m
    return out
