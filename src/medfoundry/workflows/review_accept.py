"""``medfoundry review accept``: take corrected label files back into a dataset and its pool, so
the next fine-tuning trains on them.

Every corrected file ``CORRECTED/<case>.nii.gz`` is checked before anything is written (one bad
file: a one-line error, nothing changed): readable as a label map (one channel, integer values),
the same shape and geometry as its image (within 1e-3 mm, as ``pool build`` checks; the image is the
dataset's, or for a case new to the dataset the one the queue scored), values among the
``dataset.json`` labels (and, with a pool, the pool dataset's ``label_map``).

Then per case: an existing label is copied to ``DATASET/.medfoundry_review_backup/<UTC time>/``
before it is replaced; a new case's image files are copied into ``imagesTr`` (nnU-Net:
``<case>_0000<ending>``...; MSD: ``<case>.nii.gz``); the label is written into ``labelsTr``;
``dataset.json`` gets the new ``numTraining`` (an MSD ``training`` list the new entries); a row per
case is added to ``QUEUE/accepted.csv``. Each file is written atomically (temporary file, rename).

With ``pool_dir`` (a pool built over ``DATASET``), the pool is brought up to date by
:func:`~medfoundry.workflows.review_pool.refresh_pool_cases`: ``medfoundry finetune --data POOL``
then trains on the corrected labels.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.evaluation.evaluate import list_cases as list_label_files
from medfoundry.io import Volume, VolumeReadError, read_image, read_label, write_volume
from medfoundry.pool.build import load_pool
from medfoundry.pool.layouts import CaseFiles, DatasetLayout, list_cases
from medfoundry.pool.spec import DatasetSpec
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.jsonfile import read_json
from medfoundry.utils.names import check_name
from medfoundry.workflows.fewshot_table import write_csv
from medfoundry.workflows.review import queue_images
from medfoundry.workflows.review_pool import refresh_pool_cases

BACKUP_DIR = ".medfoundry_review_backup"


@dataclass
class Correction:
    """One checked corrected label and where it goes."""

    case: str
    source: Path
    label: Volume
    target: Path
    """The dataset's label file (``labelsTr/<case><ending>``)."""
    images: list[Path]
    """The case's image files in the dataset (written for a new case)."""
    copy_from: list[Path]
    """A new case: the queue's image files to copy to ``images``; else empty."""


@dataclass
class TargetDataset:
    """The nnU-Net/MSD dataset folder corrections go into, as read before any write."""

    root: Path
    layout: DatasetLayout
    meta: dict
    """Its ``dataset.json``."""
    allowed: set[int]
    """Label values a corrected file may hold besides 0."""

    @property
    def ending(self) -> str:
        return (
            self.meta.get("file_ending", ".nii.gz") if self.layout.layout == "nnunet" else ".nii.gz"
        )

    @property
    def known(self) -> dict[str, CaseFiles]:
        return {c.case: c for c in self.layout.cases + self.layout.unlabelled}


def accept_corrections(
    queue_dir: str | os.PathLike,
    corrected_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    pool_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Check and write every corrected label of ``corrected_dir`` into the nnU-Net/MSD dataset
    ``dataset_dir`` (and ``pool_dir``); returns ``{"accepted": [rows], "pool": {...} or None}``."""
    queue = Path(queue_dir)
    if not (queue / "cases").is_dir():
        raise MedfoundryError(
            f"{queue}: not a review queue (no cases/; run 'medfoundry review queue')"
        )
    files = list_label_files(Path(corrected_dir))
    if not files:
        raise MedfoundryError(f"{corrected_dir}: no corrected label files (<case>.nii.gz)")
    target = _read_dataset(Path(dataset_dir).resolve())
    pool_name = None
    if pool_dir is not None:
        pool, pool_name = _pool_dataset(pool_dir, target.root)
        target.allowed &= {int(k) for k in pool["datasets"][pool_name]["label_map"]}
    from_queue = queue_images(queue)
    checked = [_check(case, path, target, from_queue) for case, path in files.items()]
    rows = _write(checked, target)
    _record(queue / "accepted.csv", rows, pool_dir)
    pool_summary = None
    if pool_name is not None:
        pool_summary = refresh_pool_cases(pool_dir, pool_name, [c.case for c in checked], progress)
    return {"accepted": rows, "pool": pool_summary, "dataset": str(target.root)}


def _read_dataset(root: Path) -> TargetDataset:
    if not (root / "dataset.json").is_file():
        raise MedfoundryError(f"{root}: no dataset.json (an nnU-Net or MSD dataset folder)")
    layout = _layout(root)
    if layout.layout not in ("nnunet", "msd") or not layout.labelled:
        raise MedfoundryError(
            f"{root}: corrections go into an nnU-Net or MSD dataset with labelsTr"
        )
    if not layout.label_names:
        raise MedfoundryError(f"{root / 'dataset.json'}: no foreground 'labels'")
    meta = read_json(root / "dataset.json", "dataset.json")
    return TargetDataset(root, layout, meta, set(layout.label_names))


def _layout(root: Path) -> DatasetLayout:
    return list_cases(DatasetSpec(name=check_name(root.name, "dataset folder"), root=root))


def _pool_dataset(pool_dir, dataset: Path) -> tuple[dict, str]:
    pool = load_pool(pool_dir)
    for name, d in pool["datasets"].items():
        if Path(d["root"]).resolve() == dataset and d["layout"] in ("nnunet", "msd"):
            return pool, name
    raise MedfoundryError(f"{pool_dir}: the pool has no nnU-Net or MSD dataset at {dataset}")


def _check(case: str, path: Path, target: TargetDataset, from_queue: dict) -> Correction:
    """Read and check one corrected file (see the module doc); a MedfoundryError names it."""
    check_name(case, f"{path}: case name")
    copy_from: list[Path] = []
    if case in target.known:
        images = target.known[case].images
    else:
        if case not in from_queue:
            raise MedfoundryError(
                f"{path}: case '{case}' is neither in {target.root} nor in the queue"
            )
        copy_from = from_queue[case]
        images = _new_image_paths(case, copy_from, target)
    try:
        label = read_label(path)
        image = read_image(copy_from or images)
    except VolumeReadError as err:
        raise MedfoundryError(f"corrected label refused: {err}") from None
    if label.shape_zyx != image.shape_zyx:
        raise MedfoundryError(
            f"{path}: shape {label.shape_zyx} differs from its image's {image.shape_zyx} (Z, Y, X)"
        )
    if not image.same_geometry(label, tol=1e-3):
        raise MedfoundryError(f"{path}: spacing, origin or direction differ from its image's")
    values = [int(v) for v in np.unique(label.array) if v != 0]
    if bad := [v for v in values if v not in target.allowed]:
        raise MedfoundryError(
            f"{path}: label values {bad} are not among the labels {sorted(target.allowed)}"
        )
    label_file = target.root / "labelsTr" / f"{case}{target.ending}"
    return Correction(case, Path(path), label, label_file, images, copy_from)


def _new_image_paths(case: str, sources: list[Path], target: TargetDataset) -> list[Path]:
    """Where a new case's image files go; the queue's files must already be in that form."""
    ending = target.ending
    if target.layout.layout == "msd":
        names = [f"{case}.nii.gz"]
    else:
        channels = target.meta.get("channel_names") or {}
        names = [f"{case}_{c:04d}{ending}" for c in range(len(channels))]
    if len(sources) != len(names) or any(not s.name.endswith(ending) for s in sources):
        raise MedfoundryError(
            f"case '{case}': the queue's image {[s.name for s in sources]} does not fit "
            f"{target.root} ({len(names)} file(s) ending in {ending}); add it to imagesTr first"
        )
    return [target.root / "imagesTr" / n for n in names]


def _write(checked: list[Correction], target: TargetDataset) -> list[dict]:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rows = []
    for c in checked:
        backup = ""
        if c.target.is_file():
            dest = target.root / BACKUP_DIR / stamp / c.target.name
            with atomic_path(dest) as tmp:
                shutil.copy2(c.target, tmp)
            backup = str(dest)
        for src, dst in zip(c.copy_from, c.images if c.copy_from else [], strict=True):
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        write_volume(c.label, c.target)
        rows.append(
            {
                "case": c.case,
                "corrected_file": str(c.source.resolve()),
                "label_file": str(c.target),
                "action": "replaced" if backup else "added",
                "image_added": bool(c.copy_from),
                "backup": backup,
                "label_values": " ".join(str(int(v)) for v in np.unique(c.label.array)),
                "accepted_at": stamp,
            }
        )
    _update_dataset_json(target, [c for c in checked if c.copy_from])
    return rows


def _update_dataset_json(target: TargetDataset, new: list[Correction]) -> None:
    """``numTraining`` counts the label files now there; an MSD ``training`` list gains ``new``."""
    meta = target.meta
    updated = {**meta, "numTraining": len(_layout(target.root).cases)}
    if isinstance(meta.get("training"), list):  # MSD: one entry per labelled case
        listed = {str(e.get("label")) for e in meta["training"] if isinstance(e, dict)}
        for c in new:
            entry = {
                "image": f"./imagesTr/{c.images[0].name}",
                "label": f"./labelsTr/{c.target.name}",
            }
            if entry["label"] not in listed:
                updated["training"] = [*updated["training"], entry]
    if updated == meta:  # the file is left as its author formatted it
        return
    with atomic_path(target.root / "dataset.json") as tmp:
        tmp.write_text(json.dumps(updated, indent=4) + "\n")


def _record(path: Path, rows: list[dict], pool_dir) -> None:
    """Append ``rows`` (with the pool) to ``accepted.csv``, rewritten atomically."""
    old = []
    if path.is_file():
        with open(path, newline="") as f:
            old = list(csv.DictReader(f))
    write_csv(path, old + [{**r, "pool": "" if pool_dir is None else str(pool_dir)} for r in rows])
