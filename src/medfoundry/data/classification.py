"""Classification data: labelled images from a MedMNIST ``.npz`` or a folder + CSV, read into one
in-memory form, and prepared once into a pool folder the training engine reads.

Layouts read by :func:`read_split`:

- MedMNIST ``.npz``: ``{split}_images`` uint8, ``(N, Y, X)`` (2D), ``(N, Y, X, 3)`` (2D RGB) or
  ``(N, Z, Y, X)`` (3D), and ``{split}_labels`` ``(N, 1)`` class ids or ``(N, K)`` 0/1 (multi-label).
- A folder with one ``.csv`` (columns ``case,label[,split]``; a multi-label row lists its classes
  separated by ``;``) and the images beside it or in ``images/``, named ``<case>`` or
  ``<case>.<ext>`` (NIfTI, NRRD, MHA or any format :func:`medfoundry.io.read_volume` reads; PNG/JPEG
  for 2D). Images are resampled (linear) to one shape (the model's, or the median of the training
  images).

A 2D image is a one-slice volume: ``(C, 1, Y, X)``. The network family is 3D; on a one-slice input
its 3x3x3 kernels see only their middle plane (zero padding), so a 2D model is the same family and
checkpoints move between 2D and 3D models unchanged (the cost: the two padded planes are computed).

Arrays handed on are ``images`` ``(N, C, Z, Y, X)`` in the source's dtype (normalised per batch by
:func:`normalize`, with the training images' mean and standard deviation stored in the plan) and
``labels`` ``(N,)`` int64 class indices or ``(N, K)`` float32 0/1 (multi-label).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.io import read_volume
from medfoundry.models.sizes import stage_strides
from medfoundry.planning.plan import PLAN_FORMAT
from medfoundry.pool.build import POOL_FORMAT
from medfoundry.utils.jsonfile import write_json

SPLITS = ("train", "val", "test")
MEDMNIST_CLASSES = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "adrenalmnist3d": ["normal", "hyperplasia"],
    "breastmnist": ["malignant", "normal or benign"],
    "nodulemnist3d": ["benign", "malignant"],
}
"""Class names of MedMNIST sets (by file name stem, ``_64`` etc. ignored); others: ``class_<i>``."""
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg")
MAX_STAGES = 6
"""Stride layout planned for up to this many stages; a smaller model takes the first ones."""
BATCH_VOXELS = 2**17
"""The plan's batch size: about this many voxels per batch (2D 28x28: 128, 3D 28^3: 8 -> 16)."""


@dataclass
class LabelledImages:
    """One split of a classification data source."""

    images: np.ndarray
    """``(N, C, Z, Y, X)``; a 2D set has ``Z == 1``."""
    labels: np.ndarray | None
    """``(N,)`` int64 class indices, or ``(N, K)`` float32 0/1 (multi-label); None: unlabelled."""
    cases: list[str]
    classes: list[str]
    multilabel: bool
    spacing_mm: list[float]
    """``(Z, Y, X)`` voxel size (1 mm where the source has none; a 2D set's Z is 1)."""


def read_split(
    path: str | os.PathLike, split: str, shape: list[int] | None = None
) -> LabelledImages:
    """The ``split`` (train, val or test) of a ``.npz`` or folder source; ``shape`` ``(Z, Y, X)``:
    resample folder images to it (a model's input shape). A split the source lacks is an error."""
    path = Path(path)
    if split not in SPLITS:
        raise MedfoundryError(f"split '{split}': choose one of {', '.join(SPLITS)}")
    if path.suffix == ".npz" and path.is_file():
        return _read_npz(path, split)
    if path.is_dir():
        return _read_folder(path, split, shape)
    if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
        return read_one_image(path, shape)
    raise MedfoundryError(
        f"{path}: not a MedMNIST .npz file, a folder with a labels .csv, or an image file"
    )


def read_one_image(path: Path, shape: list[int] | None = None) -> LabelledImages:
    """One unlabelled image file (or DICOM series folder, ``FOLDER::SERIES``) as a split of one
    case (named after the file), resampled to ``shape`` when given."""
    if path.is_dir() or "::" in str(path):
        vol = read_volume(path)
        array, spacing = vol.array.astype(np.float32), [float(s) for s in vol.spacing_mm]
    else:
        array, spacing = _read_image(path.parent, path.name)
    if shape is not None:
        array = _resample(array, shape)
    case = path.name.split(".")[0]
    return LabelledImages(array[None], None, [case], [], False, spacing)


def available_splits(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if path.suffix == ".npz" and path.is_file():
        with np.load(path) as f:
            return [s for s in SPLITS if f"{s}_images" in f.files]
    return sorted({r.get("split") or "train" for r in _csv_rows(path)}, key=SPLITS.index)


def normalize(images: np.ndarray, intensity: dict) -> np.ndarray:
    """``(N, C, Z, Y, X)`` images as float32, z-scored with the plan's ``mean`` / ``std``."""
    x = images.astype(np.float32)
    return (x - np.float32(intensity["mean"])) / np.float32(intensity["std"])


def prepare_pool(path: str | os.PathLike, pool_dir: str | os.PathLike) -> Path:
    """Write ``pool_dir`` (``pool.json``, ``plan.json``, ``images.npy``, ``labels.npy``) from the
    source's train and val splits (the val split, where the source has one, is the validation set;
    a test split is never read). Returns ``pool_dir``."""
    path, pool_dir = Path(path), Path(pool_dir)
    parts = [read_split(path, "train")]
    if "val" in available_splits(path):
        parts.append(read_split(path, "val", list(parts[0].images.shape[2:])))
    first = parts[0]
    if first.labels is None or not len(first.cases):
        raise MedfoundryError(f"{path}: no labelled training images")
    name = _dataset_name(path)
    images = np.concatenate([p.images for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    splits = [s for p, s in zip(parts, ("train", "val"), strict=False) for _ in p.cases]
    cases = [
        {"id": f"{name}/{s}_{c}", "dataset": name, "index": i, "split": s}
        for i, (s, c) in enumerate(zip(splits, [c for p in parts for c in p.cases], strict=True))
    ]
    pool_dir.mkdir(parents=True, exist_ok=True)
    np.save(pool_dir / "images.npy", images)
    np.save(pool_dir / "labels.npy", labels)
    pool = {
        "format": POOL_FORMAT,
        "name": name,
        "labels": {c: i for i, c in enumerate(first.classes)},
        "datasets": {name: {"local_to_global": {}, "modality": "classification"}},
        "cases": cases,
        "classification": {
            "source": str(path.resolve()),
            "multilabel": first.multilabel,
            "counts": _counts(first.labels, len(first.classes)),
        },
    }
    write_json(pool_dir / "pool.json", pool)
    write_json(pool_dir / "plan.json", _plan(pool_dir, name, first))
    return pool_dir


def load_pool_arrays(pool_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``images`` (memory-mapped) and ``labels`` of a prepared pool."""
    pool_dir = Path(pool_dir)
    return np.load(pool_dir / "images.npy", mmap_mode="r"), np.load(pool_dir / "labels.npy")


def _plan(pool_dir: Path, name: str, train: LabelledImages) -> dict:
    shape = list(train.images.shape[2:])
    mean, std = _mean_std(train.images)
    return {
        "format": PLAN_FORMAT,
        "pool_sha256": hashlib.sha256((pool_dir / "pool.json").read_bytes()).hexdigest(),
        "kind": "classification",
        "in_channels": int(train.images.shape[1]),
        "patch_size_vox": shape,
        "batch_size": plan_batch_size(shape),
        "stages": [{"stride": s} for s in stage_strides(shape, list(train.spacing_mm), MAX_STAGES)],
        "datasets": {name: {"target_spacing_mm": train.spacing_mm}},
        "intensity": {"mean": mean, "std": std or 1.0},
        "spacing_mm": train.spacing_mm,
    }


def plan_batch_size(shape_zyx) -> int:
    """About :data:`BATCH_VOXELS` voxels per batch, 2 to 128 images."""
    return int(np.clip(BATCH_VOXELS // int(np.prod(shape_zyx)), 2, 128))


def _mean_std(images: np.ndarray, chunk: int = 64) -> tuple[float, float]:
    """Mean and standard deviation of every voxel, in chunks (no float copy of the whole set)."""
    total = total_sq = 0.0
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].astype(np.float64)
        total += float(part.sum())
        total_sq += float(np.square(part).sum())
    n = images.size
    mean = total / n
    return mean, float(np.sqrt(max(total_sq / n - mean**2, 0.0)))


def _counts(labels: np.ndarray, k: int) -> list[int]:
    if labels.ndim == 2:
        return [int(v) for v in labels.sum(0)]
    return [int(v) for v in np.bincount(labels, minlength=k)]


def _dataset_name(path: Path) -> str:
    stem = path.name[: -len(".npz")] if path.name.endswith(".npz") else path.name
    clean = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in stem)
    return clean or "data"


def _read_npz(path: Path, split: str) -> LabelledImages:
    with np.load(path) as f:
        if f"{split}_images" not in f.files:
            have = [s for s in SPLITS if f"{s}_images" in f.files]
            raise MedfoundryError(f"{path}: no '{split}' split (it has: {', '.join(have)})")
        images = f[f"{split}_images"]
        labels = f[f"{split}_labels"] if f"{split}_labels" in f.files else None
    images = _npz_to_ncz(images, path)
    multilabel = labels is not None and labels.ndim == 2 and labels.shape[1] > 1
    if labels is not None:
        labels = labels.astype(np.float32) if multilabel else labels.reshape(-1).astype(np.int64)
    classes = _npz_classes(path, labels, multilabel)
    cases = [f"{i:05d}" for i in range(len(images))]  # MedMNIST has no spacing: 1 mm
    return LabelledImages(images, labels, cases, classes, multilabel, [1.0, 1.0, 1.0])


def _npz_to_ncz(images: np.ndarray, path: Path) -> np.ndarray:
    """MedMNIST image arrays -> ``(N, C, Z, Y, X)``."""
    if images.ndim == 3:  # (N, Y, X)
        return images[:, None, None]
    if images.ndim == 4 and images.shape[-1] == 3 and images.shape[1] != 3:  # (N, Y, X, RGB)
        return np.moveaxis(images, -1, 1)[:, :, None]
    if images.ndim == 4:  # (N, Z, Y, X)
        return images[:, None]
    raise MedfoundryError(f"{path}: images of shape {images.shape} are neither 2D nor 3D")


def _npz_classes(path: Path, labels: np.ndarray | None, multilabel: bool) -> list[str]:
    key = path.name.split(".")[0].split("_")[0].lower()
    if key in MEDMNIST_CLASSES:
        return list(MEDMNIST_CLASSES[key])
    if labels is None:
        return ["class_0", "class_1"]
    k = labels.shape[1] if multilabel else max(int(labels.max()) + 1, 2)
    return [f"class_{i}" for i in range(k)]


def _csv_file(folder: Path) -> Path:
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        raise MedfoundryError(
            f"{folder}: expected one .csv (columns case,label[,split]), found {len(found)}"
        )
    return found[0]


def _csv_rows(folder: Path) -> list[dict]:
    path = _csv_file(folder)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"case", "label"} <= set(rows[0]):
        raise MedfoundryError(
            f"{path}: needs the columns 'case' and 'label' (and optionally 'split')"
        )
    return rows


def _read_folder(folder: Path, split: str, shape: list[int] | None) -> LabelledImages:
    rows = _csv_rows(folder)
    multilabel = any(";" in r["label"] for r in rows)
    classes = sorted({c.strip() for r in rows for c in r["label"].split(";") if c.strip()})
    if len(classes) < 2 and not multilabel:
        raise MedfoundryError(f"{_csv_file(folder)}: a classifier needs at least two classes")
    chosen = [r for r in rows if (r.get("split") or "train") == split]
    if not chosen:
        raise MedfoundryError(f"{_csv_file(folder)}: no case of split '{split}'")
    volumes = [_read_image(folder, r["case"]) for r in chosen]
    shape = shape or [int(v) for v in np.median([v[0].shape[1:] for v in volumes], axis=0)]
    images = np.stack([_resample(a, shape) for a, _ in volumes])
    index = {c: i for i, c in enumerate(classes)}
    if multilabel:
        labels = np.zeros((len(chosen), len(classes)), np.float32)
        for n, r in enumerate(chosen):
            labels[n, [index[c.strip()] for c in r["label"].split(";") if c.strip()]] = 1
    else:
        labels = np.array([index[r["label"].strip()] for r in chosen], np.int64)
    spacing = list(np.median([v[1] for v in volumes], axis=0))
    return LabelledImages(images, labels, [r["case"] for r in chosen], classes, multilabel, spacing)


def _read_image(folder: Path, case: str) -> tuple[np.ndarray, list[float]]:
    """``(C, Z, Y, X)`` float32 and the spacing (Z, Y, X) of one case's image."""
    for base in (folder, folder / "images"):
        candidates = [base / case] + [base / f"{case}{s}" for s in IMAGE_SUFFIXES]
        for p in candidates:
            if p.is_file():
                if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
                    return _read_picture(p), [1.0, 1.0, 1.0]
                vol = read_volume(p)
                return vol.array.astype(np.float32), [float(s) for s in vol.spacing_mm]
    raise MedfoundryError(f"{folder}: no image file for case '{case}'")


def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("L" if im.mode in ("L", "I", "I;16", "1", "P") else "RGB"))
    a = a.astype(np.float32)
    return a[None, None] if a.ndim == 2 else np.moveaxis(a, -1, 0)[:, None]


def _resample(image: np.ndarray, shape: list[int]) -> np.ndarray:
    """``(C, Z, Y, X)`` -> ``(C, *shape)``, linear."""
    if list(image.shape[1:]) == list(shape):
        return image
    from scipy.ndimage import zoom

    factors = [1.0] + [t / s for t, s in zip(shape, image.shape[1:], strict=True)]
    out = zoom(image, factors, order=1)
    return out[:, : shape[0], : shape[1], : shape[2]]
