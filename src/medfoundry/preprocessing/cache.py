"""The preprocessed cache that training reads patches from.

Layout, per case ``<dataset>/<case>`` under ``POOL_DIR/preprocessed/``:

* ``<dataset>/<case>.image.npy``: float32 ``(C, Z, Y, X)``, normalised, at the target spacing;
* ``<dataset>/<case>.label.npy``: uint8/uint16 ``(Z, Y, X)`` global label ids;
* ``<dataset>/<case>.locations.npz``: per global class id present (key ``"<id>"``), an ``(N, 3)`` int32
  sample (N <= 10,000) of its voxel coordinates (Z, Y, X), for foreground oversampling;
* ``<dataset>/<case>.json``: properties to invert the preprocessing (original shape and geometry, crop
  box, spacings, normalisation applied, label maps) and the ``plan_sha256`` it was made with.

The ``.json`` is written last, after the arrays were renamed into place: a case whose ``.json`` exists
with the current ``plan_sha256`` is complete; anything else is (re)done. ``.npy`` files are read with
``mmap_mode="r"``, so a loader reads a patch without loading the volume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.names import check_case_id, path_inside

CACHE_DIR = "preprocessed"


def case_paths(pool_dir: str | os.PathLike, case_id: str) -> dict[str, Path]:
    """The four files of case ``<dataset>/<case>``; an id that would leave the cache is refused."""
    check_case_id(case_id)
    base = path_inside(Path(pool_dir) / CACHE_DIR, case_id)
    return {
        k: base.with_name(base.name + suffix)
        for k, suffix in (
            ("image", ".image.npy"),
            ("label", ".label.npy"),
            ("locations", ".locations.npz"),
            ("properties", ".json"),
        )
    }


def is_complete(pool_dir: str | os.PathLike, case_id: str, plan_sha: str) -> bool:
    props = case_paths(pool_dir, case_id)["properties"]
    if not props.is_file():
        return False
    try:
        return json.loads(props.read_text()).get("plan_sha256") == plan_sha
    except (OSError, json.JSONDecodeError):
        return False


def load_case(
    pool_dir: str | os.PathLike, case_id: str, mmap: bool = True
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(image (C, Z, Y, X) float32, label (Z, Y, X), properties)`` of a preprocessed case.

    With ``mmap`` the arrays are memory-mapped (read-only): slicing a patch reads only that patch.
    """
    paths = case_paths(pool_dir, case_id)
    if not paths["properties"].is_file():
        raise MedfoundryError(
            f"case '{case_id}' is not preprocessed in {pool_dir} (run 'medfoundry preprocess')"
        )
    props = json.loads(paths["properties"].read_text())
    mode = "r" if mmap else None
    return np.load(paths["image"], mmap_mode=mode), np.load(paths["label"], mmap_mode=mode), props


def load_locations(pool_dir: str | os.PathLike, case_id: str) -> dict[int, np.ndarray]:
    """Per global class id, an ``(N, 3)`` sample of its voxel coordinates (Z, Y, X)."""
    with np.load(case_paths(pool_dir, case_id)["locations"]) as data:
        return {int(k): data[k] for k in data.files}


def preprocessed_cases(pool_dir: str | os.PathLike) -> list[str]:
    """Case ids listed in the cache manifest (written when preprocessing finished)."""
    manifest = Path(pool_dir) / CACHE_DIR / "manifest.json"
    if not manifest.is_file():
        raise MedfoundryError(f"{manifest} not found: run 'medfoundry preprocess {pool_dir}'")
    return json.loads(manifest.read_text())["cases"]


def save_array(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary name, then rename: a reader never sees half an array."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
