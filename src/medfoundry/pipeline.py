"""The main job: data -> pool -> plan -> preprocess (later issues add pretraining and transfer).

With no data given it uses the built-in synthetic datasets; ``data_dir`` points at a folder laid out
like ``../shared/data`` and uses the real-data pool preset. Each step reuses what a previous run
finished: synthetic cases already written and preprocessed cases with the same plan are kept.
"""

from __future__ import annotations

import logging
import os
import time
from importlib import resources
from pathlib import Path

import yaml

from medfoundry import MedfoundryError
from medfoundry.planning import make_plan
from medfoundry.pool import build_pool, load_pool
from medfoundry.pool.spec import pool_spec_from_dict
from medfoundry.preprocessing import preprocess_pool
from medfoundry.synth import write_synthetic_datasets

log = logging.getLogger(__name__)
REAL_DATA_PRESET = "shared_data_pool.yaml"


def run_pipeline(
    work_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    pool_file: str | os.PathLike | None = None,
    jobs: int = 2,
    model: str = "tsfm_s",
    memory_gb: float = 8.0,
    synth_cases: int = 16,
    progress: bool = True,
) -> dict:
    """Run the main job into ``work_dir``; returns a summary dict (also written as ``summary.json``)."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if pool_file is not None:
        spec: object = Path(pool_file)
    elif data_dir is not None:
        spec = real_data_spec(data_dir)
    else:
        spec = write_synthetic_datasets(
            work / "synthetic", cases=synth_cases, jobs=jobs, progress=progress
        )
        timings["synth_s"] = time.perf_counter() - t
    pool_dir = work / "pool"
    for step, fn in (
        ("pool_build_s", lambda: build_pool(spec, pool_dir, jobs=jobs, progress=progress)),
        ("plan_s", lambda: make_plan(pool_dir, model=model, memory_gb=memory_gb)),
        ("preprocess_s", lambda: preprocess_pool(pool_dir, jobs=jobs, progress=progress)),
    ):
        t = time.perf_counter()
        fn()
        timings[step] = round(time.perf_counter() - t, 3)
    pool = load_pool(pool_dir)
    return {
        "pool_dir": str(pool_dir),
        "pool": pool["name"],
        "timings_s": timings,
        "datasets": {n: d["num_cases"] for n, d in pool["datasets"].items()},
        "labels": pool["labels"],
    }


def real_data_spec(data_dir: str | os.PathLike):
    """The preset pool (hippocampus + ACDC) over a folder laid out like ``../shared/data``."""
    data = Path(data_dir).resolve()
    if not data.is_dir():
        raise MedfoundryError(f"{data}: data folder not found")
    raw = yaml.safe_load(
        resources.files("medfoundry").joinpath("presets", REAL_DATA_PRESET).read_text()
    )
    return pool_spec_from_dict(raw, base_dir=data, source=data / REAL_DATA_PRESET)
