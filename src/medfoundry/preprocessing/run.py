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
from medfoundry.planning.plan import load_plan
from medfoundry.pool.build import load_pool
from medfoundry.pool.labels import remap_labels
from medfoundry.preprocessing.cache import CACHE_DIR, case_paths, is_complete, save_array
from medfoundry.preprocessing.transform import transform_volume
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.jsonfile import write_json
from medfoundry.utils.parallel import map_with_progress

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
    if case["label"] is None:  # an image-only case: an all-background map keeps one cache layout
        label_zyx = np.zeros(image.shape_zyx, dtype=np.uint8)
    else:
        label_zyx = read_label(case["label"]).array[0]
    img, lab, geo = transform_volume(image, dataset_plan, label_zyx, case["nonzero_bbox"])
    lab = remap_labels(lab, local_to_global)
    paths = case_paths(pool_dir, case["id"])
    paths["image"].parent.mkdir(parents=True, exist_ok=True)
    save_array(paths["image"], img)
    save_array(paths["label"], np.ascontiguousarray(lab))
    _save_locations(paths["locations"], lab, case["id"])
    props = {
        "case_id": case["id"],
        "dataset": case["dataset"],
        "plan_sha256": plan_sha,
        **geo,
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
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **found)
