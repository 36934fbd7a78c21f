"""``medfoundry synth``: write the synthetic phantom datasets in nnU-Net v2 layout plus a pool file.

Two datasets whose label sets overlap only in part (liver and kidney in both; spleen and liver
lesions only in CT; gallbladder only in MR), so a pool of them exercises partial labels: in an MR
case the spleen is present in the image but not annotated.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from medfoundry.io import Volume, write_volume
from medfoundry.synth.phantom import make_phantom
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.jsonfile import write_json
from medfoundry.utils.parallel import map_with_progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthDataset:
    folder: str
    modality: str
    labels: tuple[str, ...]
    """Annotated structures; local ids 1, 2, ... in this order."""
    spacing_mm: tuple[float, float, float]
    """Nominal (Z, Y, X) spacing; each case varies it by up to +-10% in-plane."""
    dtype: str


SYNTH_DATASETS = (
    SynthDataset(
        "Dataset901_SynthAbdomenCT",
        "CT",
        ("liver", "spleen", "kidney", "liver_lesion"),
        (4.0, 3.0, 3.0),
        "int16",
    ),
    SynthDataset(
        "Dataset902_SynthAbdomenMR",
        "MR",
        ("liver", "kidney", "gallbladder"),
        (8.0, 2.5, 2.5),
        "float32",
    ),
)


def write_synthetic_datasets(
    out_dir: str | os.PathLike, cases: int = 16, seed: int = 0, jobs: int = 1, progress: bool = True
) -> Path:
    """Write every synthetic dataset (``cases`` each) and ``out_dir/pool.yaml``; returns the pool file.

    Deterministic: the same ``seed`` gives the same voxels. Cases already written with the same seed
    are kept (a rerun only adds what is missing); a different seed rewrites them.
    """
    out = Path(out_dir)
    pool = {"name": "synthetic-abdomen", "sampling": "inv_sqrt", "datasets": []}
    work = []
    for d_idx, ds in enumerate(SYNTH_DATASETS):
        root = out / ds.folder
        fresh = _seed_of(root) != seed
        work += [
            (root, ds, f"{ds.folder.split('_')[1].lower()}_{i:03d}", (seed, d_idx, i), fresh)
            for i in range(cases)
        ]
        pool["datasets"].append(
            {
                "name": ds.folder.split("_", 1)[1].lower(),
                "root": ds.folder,
                "modality": "CT" if ds.modality == "CT" else "MRI",
                "label_map": {i + 1: n for i, n in enumerate(ds.labels)},
            }
        )
    for _ in map_with_progress(_write_case, work, jobs, desc="synth", progress=progress):
        pass
    for ds in SYNTH_DATASETS:
        write_json(
            out / ds.folder / "dataset.json",
            {
                "name": ds.folder,
                "description": "medfoundry synthetic abdominal phantom (see medfoundry.synth)",
                "channel_names": {"0": ds.modality},
                "labels": {"background": 0, **{n: i + 1 for i, n in enumerate(ds.labels)}},
                "numTraining": cases,
                "file_ending": ".nii.gz",
                "medfoundry_synth_seed": seed,
            },
        )
    pool_file = out / "pool.yaml"
    with atomic_path(pool_file) as tmp:
        tmp.write_text(yaml.safe_dump(pool, sort_keys=False))
    return pool_file


def _seed_of(root: Path) -> int | None:
    try:
        return json.loads((root / "dataset.json").read_text()).get("medfoundry_synth_seed")
    except (OSError, json.JSONDecodeError):
        return None


def _write_case(item: tuple) -> None:
    root, ds, case, seed_key, fresh = item
    image_path = root / "imagesTr" / f"{case}_0000.nii.gz"
    label_path = root / "labelsTr" / f"{case}.nii.gz"
    if not fresh and image_path.exists() and label_path.exists():
        return
    rng = np.random.default_rng(seed_key)
    jitter = rng.uniform(0.9, 1.1)
    spacing = (ds.spacing_mm[0], ds.spacing_mm[1] * jitter, ds.spacing_mm[2] * jitter)
    ph = make_phantom(rng, ds.modality, spacing)
    label = np.zeros(ph.image.shape, dtype=np.uint8)
    for i, name in enumerate(ds.labels):  # later names win (lesion over liver)
        label[ph.masks[name]] = i + 1
    origin = (
        -0.5 * (np.array(ph.image.shape) - 1)[::-1] * np.array(spacing)[::-1]
    )  # centre at 0 (x, y, z)
    image = ph.image.round().astype(ds.dtype) if ds.dtype == "int16" else ph.image
    write_volume(Volume(image[None], spacing, origin), image_path)
    write_volume(
        Volume(label[None], spacing, origin), label_path
    )  # label last: marks the case complete
