"""``medfoundry preprocess``: every case of a planned pool into the cache (see :mod:`.cache`).

Per case: read -> crop to the nonzero box -> normalise -> resample to the dataset's target spacing ->
map label ids to global ids -> sample foreground locations -> write. Resumable (finished cases are
kept), parallel over cases (each worker holds one case, so memory is bounded by ``jobs`` cases).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
import zlib
from pathlib import Path

import numpy as np

from medfoundry import __version__
from medfoundry.io import read_image, read_label
from medfoundry.io.jsonfile import write_json
from medfoundry.parallel import map_with_progress
from medfoundry.planning.plan import load_plan
from medfoundry.pool.build import load_pool
from medfoundry.pool.labels import remap_labels
from medfoundry.preprocessing.cache import CACHE_DIR, case_paths, is_complete, save_array
from medfoundry.preprocessing.normalize import normalize
from medfoundry.preprocessing.resample import (
    needs_resampling,
    resample_image,
    resample_label,
    resampled_shape,
    thick_axis_of,
)

log = logging.getLogger(__name__)
LOCATIONS_PER_CLASS = 10_000
_TEST_DELAY_S = float(os.environ.get("MEDFOUNDRY_SLOW_TEST_DELAY", "0"))


def preprocess_pool(pool_dir: str | os.PathLike, jobs: int = 1, progress: bool = True) -> dict:
    """Preprocess every case not already done with the current plan; returns a summary dict."""
    pool_dir = Path(pool_dir)
    pool, plan = load_pool(pool_dir), load_plan(pool_dir)
    plan_sha = hashlib.sha256((pool_dir / "plan.json").read_bytes()).hexdigest()
    cache = pool_dir / CACHE_DIR
    for stale in cache.glob("*/.tmp-*"):  # left by a killed run; never read
        stale.unlink(missing_ok=True)
    todo = [c for c in pool["cases"] if not is_complete(pool_dir, c["id"], plan_sha)]
    log.info(
        "preprocess: %d of %d cases to do (%d kept)",
        len(todo),
        len(pool["cases"]),
        len(pool["cases"]) - len(todo),
    )
    work = functools.partial(_work, pool_dir=str(pool_dir), pool=pool, plan=plan, plan_sha=plan_sha)
    for _ in map_with_progress(work, todo, jobs, desc="preprocess", progress=progress):
        pass
    summary = {
        "plan_sha256": plan_sha,
        "cases": [c["id"] for c in pool["cases"]],
        "medfoundry_version": __version__,
    }
    write_json(cache / "manifest.json", summary)
    return {
        "done": len(todo),
        "kept": len(pool["cases"]) - len(todo),
        "total": len(pool["cases"]),
        "cache": str(cache),
    }


def _work(case: dict, pool_dir: str, pool: dict, plan: dict, plan_sha: str) -> str:
    dataset = pool["datasets"][case["dataset"]]
    l2g = {int(k): v for k, v in dataset["local_to_global"].items()}
    preprocess_case(case, plan["datasets"][case["dataset"]], l2g, Path(pool_dir), plan_sha)
    return case["id"]


def preprocess_case(
    case: dict, dataset_plan: dict, local_to_global: dict[int, int], pool_dir: Path, plan_sha: str
) -> dict:
    """Preprocess one pool case record and write it to the cache; returns its properties."""
    image = read_image(case["images"])
    label = read_label(case["label"])
    (z0, z1), (y0, y1), (x0, x1) = case["nonzero_bbox"]
    img = image.array[:, z0:z1, y0:y1, x0:x1]
    lab = label.array[0, z0:z1, y0:y1, x0:x1]
    img, applied = normalize(img, dataset_plan["normalization"])
    target = dataset_plan["target_spacing_mm"]
    resampled = needs_resampling(lab.shape, image.spacing_mm, target)
    if resampled:
        new_shape = resampled_shape(lab.shape, image.spacing_mm, target)
        thick = thick_axis_of(image.spacing_mm)
        img = resample_image(img, new_shape, thick)
        lab = resample_label(lab, new_shape, thick)
    lab = remap_labels(lab, local_to_global)
    paths = case_paths(pool_dir, case["id"])
    paths["image"].parent.mkdir(parents=True, exist_ok=True)
    save_array(paths["image"], np.ascontiguousarray(img, dtype=np.float32))
    save_array(paths["label"], np.ascontiguousarray(lab))
    _save_locations(paths["locations"], lab, case["id"])
    props = {
        "case_id": case["id"],
        "dataset": case["dataset"],
        "plan_sha256": plan_sha,
        "original_geometry": image.geometry(),
        "nonzero_bbox": case["nonzero_bbox"],
        "cropped_shape_zyx": [z1 - z0, y1 - y0, x1 - x0],
        "original_spacing_mm": [float(s) for s in image.spacing_mm],
        "target_spacing_mm": target,
        "resampled": bool(resampled),
        "shape_zyx": list(lab.shape),
        "normalization": applied,
        "local_to_global": {str(k): v for k, v in local_to_global.items()},
        "classes_present": sorted(int(v) for v in np.unique(lab) if v != 0),
    }
    if _TEST_DELAY_S:
        time.sleep(_TEST_DELAY_S)  # lets the kill-and-resume test stop a run between two writes
    write_json(paths["properties"], props)  # last: marks the case complete
    return props


def _save_locations(path: Path, label_zyx: np.ndarray, case_id: str) -> None:
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    found = {}
    flat = label_zyx.ravel()
    for cls in np.unique(flat):
        if cls == 0:
            continue
        idx = np.flatnonzero(flat == cls)
        if idx.size > LOCATIONS_PER_CLASS:
            idx = np.sort(rng.choice(idx, LOCATIONS_PER_CLASS, replace=False))
        found[str(int(cls))] = np.stack(np.unravel_index(idx, label_zyx.shape), axis=1).astype(
            np.int32
        )
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as f:
        np.savez(f, **found)
    os.replace(tmp, path)
