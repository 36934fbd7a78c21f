"""Findings of a label map: per structure its volume, its connected components (lesions) with their
volumes and longest diameters, and the image intensities inside it (numpy + scipy only).

Conventions (written once here, tested in ``tests/evaluation/test_findings.py``):

- a structure is one class id of the label map (``labels.array[0] == id``); id 0 is background
  and is never reported; every other id of ``class_names`` is, absent ones with volume 0;
- volumes count voxels times the voxel volume ``|det(direction @ diag(spacing_mm))|`` (mm^3, /1000
  for ml), so they hold for anisotropic spacing and any direction matrix;
- components are 26-connected (voxels touching by a face, an edge or a corner belong together),
  listed largest first; components smaller than ``min_component_voxels`` are left out of the list
  and of ``n_components`` (counted in ``n_small_components``) but stay in the structure's volume;
- distances are Euclidean between voxel centres in world millimetres. The longest diameter is the
  largest distance between two voxel centres of a component (exact: the maximum over the vertices of
  the convex hull of its voxel centres); one voxel has diameter 0;
- the longest axial diameter (RECIST-like) is the largest such distance within one axial slice,
  over all slices; the axial slices are those of the array axis closest to the world
  superior-inferior axis (``Z`` for the usual axial acquisitions), named in ``axial_axis``;
- intensity statistics use every voxel of the structure, per image channel: mean, standard deviation
  (population, ddof 0), median, 5th and 95th percentiles (linear interpolation); the unit is ``HU``
  when the modality is CT, else ``a.u.``.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist

from medfoundry import MedfoundryError
from medfoundry.io.volume import AXES, Volume

log = logging.getLogger(__name__)

FINDINGS_FORMAT = "medfoundry.findings/1"
CONNECTIVITY = 26
_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)
_BRUTE_FORCE_POINTS = 64  # below this, all pairs are cheaper than a hull
_CHUNK = 1024  # rows of the pairwise-distance block (1024 x N float64)


def compute_findings(
    labels: Volume,
    class_names: dict[int, str],
    image: Volume | None = None,
    modality: str | None = None,
    min_component_voxels: int = 1,
) -> dict:
    """Measure every named structure of a label map.

    Args:
        labels: ``(1, Z, Y, X)`` integer label map with its geometry.
        class_names: class id -> name; id 0 (background) is skipped.
        image: optional ``(C, Z, Y, X)`` image on the label map's grid (same shape) for intensities.
        modality: e.g. ``"CT"`` (intensities in HU) or ``"MR"``; recorded as given.
        min_component_voxels: components with fewer voxels are not listed (default 1: all).

    Returns:
        A JSON-ready dict: ``format``, ``modality``, ``intensity_unit``, ``connectivity`` (26),
        ``min_component_voxels``, ``axial_axis``, ``geometry`` (:meth:`Volume.geometry` plus
        ``voxel_volume_mm3``), ``unnamed_label_ids`` (ids found in the map but not in
        ``class_names``; None when ids exceed 65535: not checked) and ``structures``: one dict per
        named id, in id order, with ``id``, ``name``, ``voxels``, ``volume_ml``, ``n_components``,
        ``n_small_components``, ``components`` (each: ``index`` (1 = largest), ``voxels``,
        ``volume_ml``, ``longest_diameter_mm``, ``longest_axial_diameter_mm``, ``axial_slice``
        (the index along ``axial_axis`` where the latter lies), ``centroid_zyx_vox``,
        ``centroid_lps_mm``, ``bbox_zyx_vox`` (``[start, stop)`` per axis)) and ``intensity`` (one
        dict per image channel: ``channel``, ``mean``, ``std``, ``median``, ``p5``, ``p95``,
        ``unit``; None without an image or for an absent structure).
    """
    lab = _check_inputs(labels, class_names, image, min_component_voxels)
    names = {int(k): str(v) for k, v in class_names.items() if int(k) != 0}  # "1" (JSON) -> 1
    ids = sorted(names)
    axis_to_world = labels.direction * labels.spacing_mm  # (3, 3): column a = mm per step on axis a
    voxel_mm3 = float(abs(np.linalg.det(axis_to_world)))
    axial = axial_axis(labels.direction)
    boxes, unnamed = _boxes(lab, ids)
    unit = "HU" if modality is not None and modality.upper() == "CT" else "a.u."
    structures = []
    for cid in ids:
        box = boxes[cid - 1]
        mask = None if box is None else lab[box] == cid
        s = _structure(mask, box, labels, voxel_mm3, axial, min_component_voxels)
        stats = None if image is None or mask is None else intensity_stats(image, box, mask)
        if stats is not None:
            stats = [{**st, "unit": unit} for st in stats]
        structures.append({"id": cid, "name": names[cid], **s, "intensity": stats})
    return {
        "format": FINDINGS_FORMAT,
        "modality": modality,
        "intensity_unit": unit if image is not None else None,
        "connectivity": CONNECTIVITY,
        "min_component_voxels": int(min_component_voxels),
        "axial_axis": AXES[1 + axial],
        "geometry": {**labels.geometry(), "voxel_volume_mm3": voxel_mm3},
        "unnamed_label_ids": unnamed,
        "structures": structures,
    }


def axial_axis(direction: np.ndarray) -> int:
    """The array axis (0=Z, 1=Y, 2=X) closest to the world superior-inferior axis (LPS z)."""
    return int(np.argmax(np.abs(np.asarray(direction)[2])))


def longest_diameter(points_mm: np.ndarray) -> float:
    """Largest Euclidean distance between two of ``points_mm`` ``(N, D)`` (0 for N < 2), exact: the
    maximum over the convex hull's vertices (all pairs for few or degenerate points)."""
    p = np.asarray(points_mm, dtype=np.float64)
    if len(p) < 2:
        return 0.0
    if len(p) > _BRUTE_FORCE_POINTS:
        p = _hull_vertices(p)
    best = 0.0
    for i in range(0, len(p), _CHUNK):
        best = max(best, float(cdist(p[i : i + _CHUNK], p, "sqeuclidean").max()))
    return float(np.sqrt(best))


def intensity_stats(image: Volume, box: tuple[slice, ...], mask: np.ndarray) -> list[dict]:
    """Per channel of ``image`` ``(C, Z, Y, X)``: mean, std (ddof 0), median, p5, p95 of the voxels
    where ``mask`` (the boolean ``(z, y, x)`` crop ``box`` of the grid) is true, as floats."""
    out = []
    for ch in range(image.num_channels):
        v = image.array[ch][box][mask].astype(np.float64)
        p5, median, p95 = np.percentile(v, [5, 50, 95])
        out.append(
            {
                "channel": ch,
                "mean": float(v.mean()),
                "std": float(v.std()),
                "median": float(median),
                "p5": float(p5),
                "p95": float(p95),
            }
        )
    return out


def _check_inputs(labels, class_names, image, min_component_voxels) -> np.ndarray:
    if labels.num_channels != 1:
        raise MedfoundryError(f"a label map has one channel, found {labels.num_channels}")
    lab = labels.array[0]
    if lab.dtype.kind not in "biu":
        raise MedfoundryError(f"a label map holds integers, found {lab.dtype}")
    if any(int(i) < 0 for i in class_names):
        raise MedfoundryError(f"class ids are >= 0, found {sorted(class_names)}")
    if min_component_voxels < 1:
        raise MedfoundryError(f"min_component_voxels must be >= 1, got {min_component_voxels}")
    if image is not None:
        if image.shape_zyx != labels.shape_zyx:
            raise MedfoundryError(
                f"image shape {image.shape_zyx} differs from label map shape "
                f"{labels.shape_zyx} (Z, Y, X)"
            )
        if not image.same_geometry(labels, tol=1e-3):
            log.warning(
                "image and label map headers differ slightly; using the label map's geometry"
            )
    return lab.astype(np.int32) if lab.dtype == bool else lab


def _structure(mask, box, labels: Volume, voxel_mm3: float, axial: int, min_voxels: int) -> dict:
    """Volume and components of one structure (``mask``: its crop ``box``, or None if absent)."""
    if mask is None:
        return {
            "voxels": 0,
            "volume_ml": 0.0,
            "n_components": 0,
            "n_small_components": 0,
            "components": [],
        }
    axis_to_world = labels.direction * labels.spacing_mm
    comp, n = ndimage.label(mask, structure=_STRUCTURE_26)  # (z, y, x) crop of component ids
    sub_boxes = ndimage.find_objects(comp)
    # counted inside each component's box: a bincount of the whole crop costs a 64-bit copy of it
    sizes = np.array([np.count_nonzero(comp[sb] == k + 1) for k, sb in enumerate(sub_boxes)])
    order = [int(k) for k in np.argsort(-sizes, kind="stable") if sizes[k] >= min_voxels]
    offset = np.array([s.start for s in box])
    components = []
    for rank, k in enumerate(order, start=1):
        sb = sub_boxes[k]
        start = offset + [s.start for s in sb]
        stop = offset + [s.stop for s in sb]
        c = _component(comp[sb] == k + 1, start, labels.origin_mm, axis_to_world, axial)
        c["bbox_zyx_vox"] = [[int(a), int(b)] for a, b in zip(start, stop, strict=True)]
        vol_ml = int(sizes[k]) * voxel_mm3 / 1000.0
        components.append({"index": rank, "voxels": int(sizes[k]), "volume_ml": vol_ml, **c})
    return {
        "voxels": int(sizes.sum()),
        "volume_ml": int(sizes.sum()) * voxel_mm3 / 1000.0,
        "n_components": len(order),
        "n_small_components": int(n - len(order)),
        "components": components,
    }


def _component(crop: np.ndarray, start, origin_mm, axis_to_world, axial: int) -> dict:
    """Diameters and centroid of one component: ``crop`` its boolean ``(z, y, x)`` box, whose
    first voxel is at index ``start``."""
    perm = [axial, *(a for a in range(3) if a != axial)]
    ends = _row_ends(np.transpose(crop, perm)) + np.asarray(start)[perm]  # (M, 3), by slice
    world = ends @ axis_to_world[:, perm].T  # (M, 3) mm, origin dropped (distances only)
    axial_mm, axial_slice = _longest_in_slices(ends, axis_to_world[:, perm[1:]])
    count = crop.sum()
    centroid = np.asarray(start) + [
        np.arange(n) @ crop.sum(axis=tuple(b for b in range(3) if b != a)) / count
        for a, n in enumerate(crop.shape)
    ]
    return {
        "longest_diameter_mm": longest_diameter(world),
        "longest_axial_diameter_mm": axial_mm,
        "axial_slice": axial_slice,
        "centroid_zyx_vox": [float(v) for v in centroid],
        "centroid_lps_mm": [float(v) for v in origin_mm + axis_to_world @ centroid],
    }


def _row_ends(m: np.ndarray) -> np.ndarray:
    """The first and last true voxel of each row (along the last axis) of the boolean ``m``
    ``(A, B, C)``, as ``(M, 3)`` indices sorted by ``A``: every other voxel centre of a row lies
    between them, so they span the same convex hull (in 3D and within each ``A`` slice)."""
    rows = m.any(axis=2)  # (A, B)
    a, b = np.nonzero(rows)  # sorted by a, then b
    first = m.argmax(axis=2)[a, b]
    last = m.shape[2] - 1 - m[:, :, ::-1].argmax(axis=2)[a, b]
    pairs = np.stack([np.c_[a, b, first], np.c_[a, b, last]], axis=1)  # (R, 2, 3)
    return pairs.reshape(-1, 3)


def _longest_in_slices(p: np.ndarray, in_plane: np.ndarray) -> tuple[float, int]:
    """Longest distance within one slice ``p[:, 0]`` of points ``p`` ``(N, 3)`` sorted by slice;
    ``in_plane`` ``(3, 2)`` maps the two in-slice index steps to world mm. Returns (mm, slice)."""
    r = np.linalg.qr(in_plane, mode="r")  # |in_plane @ d| == |r @ d|: exact 2D coordinates
    flat = p[:, 1:] @ r.T  # (N, 2) mm
    starts = np.flatnonzero(np.r_[True, p[1:, 0] != p[:-1, 0]])
    stops = np.r_[starts[1:], len(p)]
    best, where = -1.0, int(p[0, 0])
    for a, b in zip(starts, stops, strict=True):
        d = longest_diameter(flat[a:b])
        if d > best:
            best, where = d, int(p[a, 0])
    return best, where


def _hull_vertices(p: np.ndarray) -> np.ndarray:
    """The convex hull's vertices of ``p`` (joggled when flat: the extreme points stay vertices)."""
    try:
        return p[ConvexHull(p).vertices]
    except QhullError:
        try:
            return p[ConvexHull(p, qhull_options="QJ").vertices]
        except QhullError:
            return p


def _boxes(lab: np.ndarray, named: list[int]) -> tuple[list, list[int] | None]:
    """The bounding box of each id 1..max (one pass), and the non-zero ids present but not named
    (None when ids reach beyond 16 bits: not checked, too costly)."""
    top = max(named, default=0)
    hi = int(lab.max())
    if hi > 65535:
        return (ndimage.find_objects(lab, max_label=top) if top else []), None
    boxes = ndimage.find_objects(lab, max_label=max(top, hi)) if max(top, hi) > 0 else []
    known = set(named)
    unnamed = [i + 1 for i, b in enumerate(boxes) if b is not None and i + 1 not in known]
    return boxes, unnamed
