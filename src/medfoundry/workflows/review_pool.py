"""Bring a built pool up to date with label files that changed in one of its datasets (the last
step of ``medfoundry review accept``), so ``medfoundry finetune --data POOL`` trains on them.

Each changed case is measured again as ``pool build`` measures it (:func:`inspect_case`) and its
``pool.json`` record replaced; a case new to the pool gets a new record and every case's sampling
probability is recomputed by the pool's rule. A planned pool keeps its plan (its spacing and
normalisation still describe the data, and a model fine-tuned on the pool must be preprocessed as
before; ``medfoundry plan`` re-plans from scratch): only the plan's ``pool_sha256`` follows the new
``pool.json``. In a preprocessed pool the cached copies of exactly the changed cases are made again
(:func:`preprocess_pool`); the other cached cases are kept. A pool built with case lists for the
dataset keeps a new case only until it is rebuilt (add the case to the list).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.pool.build import load_pool
from medfoundry.pool.layouts import CaseFiles, list_cases
from medfoundry.pool.sampling import sampling_probabilities
from medfoundry.pool.spec import DatasetSpec
from medfoundry.pool.validate import CaseInfo, inspect_case
from medfoundry.preprocessing.cache import CACHE_DIR, case_paths
from medfoundry.preprocessing.run import preprocess_pool
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.jsonfile import read_json, write_json


def refresh_pool_cases(
    pool_dir: str | os.PathLike, dataset: str, cases: list[str], progress: bool = True
) -> dict:
    """Measure ``cases`` of ``dataset`` (an nnU-Net/MSD dataset of the pool, whose label files
    changed) again into ``pool.json`` and, when the pool was preprocessed, make their cached copies
    again (see the module doc). Returns ``{"pool", "cases", "plan_kept", "preprocessed"}``."""
    pool_dir = Path(pool_dir)
    pool = load_pool(pool_dir)
    old_pool_sha = _sha256(pool_dir / "pool.json")
    samples = dict(np.load(pool_dir / "foreground_samples.npz"))
    for case_id, info in _measure(pool, dataset, cases).items():
        samples[case_id] = info.fg_samples
    changed = {f"{dataset}/{c}" for c in cases}
    pool["skipped"] = [s for s in pool["skipped"] if s["case"] not in changed]
    pool["datasets"][dataset]["num_cases"] = sum(c["dataset"] == dataset for c in pool["cases"])
    probs = sampling_probabilities([c["dataset"] for c in pool["cases"]], pool["sampling"])
    for c, p in zip(pool["cases"], probs, strict=True):
        c["sampling_probability"] = round(p, 12)
    with atomic_path(pool_dir / "foreground_samples.npz") as tmp:
        np.savez(tmp, **samples)
    write_json(pool_dir / "pool.json", pool)
    summary = {"pool": str(pool_dir), "cases": len(cases), "plan_kept": False, "preprocessed": 0}
    if not _keep_plan(pool_dir, pool, old_pool_sha, changed):
        return summary  # no plan, or one already out of date: 'medfoundry plan' comes next
    summary["plan_kept"] = True
    if not (pool_dir / CACHE_DIR / "manifest.json").is_file():
        return summary  # never preprocessed: 'medfoundry preprocess' makes every case
    for case_id in changed:  # the properties file marks a cached case complete: without it, redone
        case_paths(pool_dir, case_id)["properties"].unlink(missing_ok=True)
    summary["preprocessed"] = preprocess_pool(pool_dir, jobs=1, progress=progress)["done"]
    return summary


def _measure(pool: dict, dataset: str, cases: list[str]) -> dict[str, CaseInfo]:
    """Inspect each case's files and put its record into ``pool`` (replaced, or appended)."""
    record = pool["datasets"][dataset]
    if record["layout"] not in ("nnunet", "msd"):
        raise MedfoundryError(f"pool dataset '{dataset}': not an nnU-Net or MSD dataset folder")
    layout = list_cases(DatasetSpec(dataset, Path(record["root"]), layout=record["layout"]))
    files = {c.case: c for c in layout.cases}
    allowed = {int(k) for k in record["label_map"]}
    by_id = {c["id"]: c for c in pool["cases"]}
    found = {}
    for case in cases:
        case_id = f"{dataset}/{case}"
        if case not in files:
            raise MedfoundryError(f"{case_id}: no label file in {record['root']}")
        old = by_id.get(case_id)
        images = [Path(p) for p in old["images"]] if old else files[case].images
        info = inspect_case(CaseFiles(case, images, files[case].label), allowed)
        if not isinstance(info, CaseInfo):
            raise MedfoundryError(f"{case_id}: {'; '.join(p.reason for p in info)}")
        if info.num_channels != record["num_channels"]:
            raise MedfoundryError(
                f"{case_id}: {info.num_channels} channel(s), the pool has {record['num_channels']}"
            )
        new = _case_record(case_id, dataset, images, files[case].label, info, record)
        if old:
            old.update(new)
        else:
            pool["cases"].append(new)
        found[case_id] = info
    return found


def _keep_plan(pool_dir: Path, pool: dict, old_pool_sha: str, changed: set[str]) -> bool:
    """Let the plan that described the old ``pool.json`` describe the new one: only its
    ``pool_sha256`` changes, so every cached case but the ``changed`` ones is still what preprocessing
    would make, and its record is moved to the new plan's sha256. A crash between these writes only
    leaves cases to preprocess again. False when there is no plan or it was already out of date."""
    plan_path = pool_dir / "plan.json"
    if not plan_path.is_file():
        return False
    plan = read_json(plan_path, "plan.json")
    if plan.get("pool_sha256") != old_pool_sha:
        return False
    old_plan_sha = _sha256(plan_path)
    write_json(plan_path, {**plan, "pool_sha256": _sha256(pool_dir / "pool.json")})
    new_plan_sha = _sha256(plan_path)
    for case in pool["cases"]:
        props_path = case_paths(pool_dir, case["id"])["properties"]
        if case["id"] in changed or not props_path.is_file():
            continue
        props = read_json(props_path, "preprocessed case record")
        if props.get("plan_sha256") == old_plan_sha:
            write_json(props_path, {**props, "plan_sha256": new_plan_sha})
    return True


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _case_record(case_id, dataset, images, label, info: CaseInfo, record: dict) -> dict:
    """A ``pool.json`` case record as ``pool build`` writes it (its probability set by the caller)."""
    return {
        "id": case_id,
        "dataset": dataset,
        "images": [str(x) for x in images],
        "label": str(label),
        "valid_labels": sorted({g for g in record["local_to_global"].values() if g != 0}),
        "shape": info.shape_zyx,
        "spacing": info.spacing_mm,
        "sampling_probability": 0.0,
        "label_values": info.label_values,
        "nonzero_bbox": info.nonzero_bbox,
    }
