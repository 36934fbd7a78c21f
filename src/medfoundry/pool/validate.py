"""Read every case of a dataset once: check it, and measure what planning needs (the case fingerprint).

Checks (each failure is a :class:`Problem` naming case, file and reason): missing or unreadable
file, image/label shape or geometry mismatch, channels that disagree, label values absent from the
dataset's ``label_map``, NaN/Inf voxels. Measurements: shape, spacing, the nonzero bounding box the
preprocessor will crop to, and a seeded sample of foreground (label > 0) intensities per channel.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfoundry.io import VolumeReadError, read_image, read_label
from medfoundry.pool.layouts import CaseFiles

FOREGROUND_SAMPLES_PER_CASE = 5000
"""Foreground intensities kept per case and channel for dataset statistics (CT clipping, z-score)."""


@dataclass
class Problem:
    case: str
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.case}: {self.file}: {self.reason}"


@dataclass
class CaseInfo:
    """What validation learned about one valid case."""

    case: str
    shape_zyx: list[int]
    spacing_mm: list[float]
    num_channels: int
    label_values: list[int]
    nonzero_bbox: list[list[int]]
    """``[[z0, z1], [y0, y1], [x0, x1]]`` (half-open) of voxels nonzero in any channel."""
    fg_samples: np.ndarray = field(repr=False)
    """``(C, N)`` float32 foreground intensities (N <= FOREGROUND_SAMPLES_PER_CASE)."""


def inspect_case(files: CaseFiles, allowed_labels: set[int]) -> CaseInfo | list[Problem]:
    """Read and check one case. Returns its info, or every problem found."""
    problems: list[Problem] = []
    for path in [*files.images, *([files.label] if files.label else [])]:
        if not Path(path).exists():
            problems.append(Problem(files.case, str(path), "file not found"))
    if problems:
        return problems
    try:
        image = read_image(files.images)
    except VolumeReadError as err:
        return [Problem(files.case, err.path, err.reason)]
    if files.label is None:  # an image-only case (self-supervised training)
        problems = _non_finite_problems(files, image.array)
        return problems or _case_info(files.case, image, None, [])
    try:
        label = read_label(files.label)
    except VolumeReadError as err:
        return [Problem(files.case, err.path, err.reason)]
    if image.shape_zyx != label.shape_zyx:
        problems.append(
            Problem(
                files.case,
                str(files.label),
                f"label shape {label.shape_zyx} != image shape {image.shape_zyx} (Z, Y, X)",
            )
        )
    elif not image.same_geometry(label, tol=1e-3):
        problems.append(Problem(files.case, str(files.label), _geometry_diff(image, label)))
    problems += _non_finite_problems(files, image.array)
    values = np.unique(label.array).tolist()
    unknown = [v for v in values if v != 0 and v not in allowed_labels]
    if unknown:
        problems.append(
            Problem(
                files.case,
                str(files.label),
                f"label values {unknown} are not in label_map {sorted(allowed_labels)}",
            )
        )
    if problems:
        return problems
    return _case_info(files.case, image, label.array[0], [int(v) for v in values])


def _case_info(case: str, image, label_zyx: np.ndarray | None, values: list[int]) -> CaseInfo:
    """The measurements of a valid case; an image-only case (``label_zyx`` None) samples its
    intensities inside the nonzero (body) region instead of a foreground."""
    body = np.any(image.array != 0, axis=0) if label_zyx is None else label_zyx > 0
    return CaseInfo(
        case=case,
        shape_zyx=list(image.shape_zyx),
        spacing_mm=[round(float(s), 6) for s in image.spacing_mm],
        num_channels=image.num_channels,
        label_values=values,
        nonzero_bbox=nonzero_bbox(image.array),
        fg_samples=_foreground_samples(image.array, body, case),
    )


def _non_finite_problems(files: CaseFiles, image_czyx: np.ndarray) -> list[Problem]:
    """One problem per channel holding NaN/Inf voxels, naming that channel's file."""
    bad = (~np.isfinite(image_czyx)).reshape(image_czyx.shape[0], -1).sum(axis=1)
    one_file_per_channel = len(files.images) == image_czyx.shape[0]
    return [
        Problem(
            files.case,
            str(files.images[c] if one_file_per_channel else files.images[0]),
            f"{int(n)} NaN/Inf voxels" + ("" if one_file_per_channel else f" in channel {c}"),
        )
        for c, n in enumerate(bad)
        if n
    ]


def nonzero_bbox(array_czyx: np.ndarray) -> list[list[int]]:
    """Half-open bounding box ``[[z0, z1], [y0, y1], [x0, x1]]`` of voxels nonzero in any channel.

    An all-zero image gives the full extent.
    """
    mask = np.any(array_czyx != 0, axis=0)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append([int(hit[0]), int(hit[-1]) + 1] if hit.size else [0, mask.shape[axis]])
    return box


def _foreground_samples(image_czyx: np.ndarray, region_zyx: np.ndarray, case: str) -> np.ndarray:
    """``(C, N)`` intensities of a seeded sample of the voxels where ``region_zyx`` is true."""
    fg = np.flatnonzero(region_zyx.ravel())
    if fg.size > FOREGROUND_SAMPLES_PER_CASE:
        rng = np.random.default_rng(zlib.crc32(case.encode()))  # deterministic per case
        fg = np.sort(rng.choice(fg, FOREGROUND_SAMPLES_PER_CASE, replace=False))
    flat = image_czyx.reshape(image_czyx.shape[0], -1)
    return flat[:, fg].astype(np.float32)


def _geometry_diff(image, label) -> str:
    parts = []
    for name in ("spacing_mm", "origin_mm", "direction"):
        a, b = getattr(image, name), getattr(label, name)
        if not np.allclose(a, b, atol=1e-3):
            parts.append(f"{name} {np.round(b, 4).tolist()} != image {np.round(a, 4).tolist()}")
    return "label geometry differs from image: " + "; ".join(parts)
