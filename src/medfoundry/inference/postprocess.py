"""Post-processing of label maps: keep each class's largest connected component (nnU-Net's
``remove_all_but_largest_component``), which removes false positives far from an organ that occurs
once per scan (liver, spleen, a kidney by side). Not for structures that come in pieces (lesions)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
"""26-connectivity: voxels touching by a face, an edge or a corner are one component (a thin or
obliquely cut structure stays whole)."""


def keep_largest_component(labels_zyx: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """A copy of the ``(Z, Y, X)`` integer label map where each id of ``class_ids`` keeps only its
    largest 26-connected component (the rest become background, 0); other ids are unchanged."""
    out = labels_zyx.copy()
    for cls in class_ids:
        mask = labels_zyx == cls
        components, count = ndimage.label(mask, structure=CONNECTIVITY)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())[1:]  # (count,) voxels per component
        out[mask & (components != int(np.argmax(sizes)) + 1)] = 0
    return out
