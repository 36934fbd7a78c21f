"""The pool file (``POOL.yaml``): typed dataclasses are the schema, the YAML holds values only.

Example::

    name: mri-pool
    sampling: inv_sqrt                  # inv_sqrt (default) | uniform | dataset_equal
    datasets:
      - name: hippocampus
        root: ../shared/data/msd_task04_hippocampus   # relative to this file; layout auto-detected
        modality: MRI
        label_map: {1: hippocampus_anterior, 2: hippocampus_posterior}
      - name: acdc
        root: ../shared/data/acdc
        images: images/{case}.nii.gz    # plain-folder layout; a list gives one pattern per channel
        labels: labels/{case}.nii.gz
        case_lists: [train.list, val.list]
        modality: MRI
        label_map: {1: right_ventricle, 2: myocardium, 3: left_ventricle}

``label_map`` maps every local label id to a global structure name. The same name in two datasets is
the same global class. A local id mapped to ``null`` is *dropped*: its voxels become background (0)
in the pool and no global class is made for it; the dataset then does not annotate that structure.
When ``label_map`` is omitted for an nnU-Net/MSD dataset, the names in its ``dataset.json`` are used
(lower-cased, spaces replaced by ``_``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medfoundry import MedfoundryError

LAYOUTS = ("auto", "nnunet", "msd", "folder")


@dataclass
class DatasetSpec:
    """One source dataset of a pool."""

    name: str
    """Dataset name; unique in the pool, used in case ids ``<dataset>/<case>``."""
    root: Path
    """Dataset folder (absolute once loaded)."""
    layout: str = "auto"
    """``auto`` (detect), ``nnunet``, ``msd`` or ``folder``."""
    images: list[str] = field(default_factory=list)
    """Folder layout: image filename patterns with ``{case}``, one per channel, relative to ``root``."""
    labels: str | None = None
    """Folder layout: label filename pattern with ``{case}``."""
    case_lists: list[str] = field(default_factory=list)
    """Optional files (relative to ``root``) listing case names, one per line; their union is used."""
    modality: str | list[str] | None = None
    """``CT``, ``MRI``... for all channels, or one per channel. Default: from ``dataset.json``."""
    label_map: dict[int, str | None] | None = None
    """Local label id -> global structure name (``null``: dropped, becomes background)."""


@dataclass
class PoolSpec:
    """A pool file: a name, a sampling rule and the datasets fused into one label space."""

    name: str
    datasets: list[DatasetSpec]
    sampling: str = "inv_sqrt"
    """Case sampling rule, see :data:`medfoundry.pool.sampling.SAMPLING_RULES`."""
    source: Path | None = None
    """The file this spec was read from."""


def load_pool_spec(path: str | os.PathLike) -> PoolSpec:
    """Parse and check a pool YAML file; dataset roots are resolved relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise MedfoundryError(f"{path}: pool file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MedfoundryError(f"{path}: not valid YAML ({exc})") from exc
    return pool_spec_from_dict(raw, base_dir=path.parent, source=path)


def pool_spec_from_dict(raw: object, base_dir: Path, source: Path | None = None) -> PoolSpec:
    where = str(source or "pool spec")
    if not isinstance(raw, dict):
        raise MedfoundryError(f"{where}: expected a mapping with 'name' and 'datasets'")
    _check_keys(raw, PoolSpec, where, exclude={"source"})
    if not raw.get("datasets"):
        raise MedfoundryError(f"{where}: 'datasets' is missing or empty")
    datasets = [
        _dataset_spec(d, base_dir, f"{where}: datasets[{i}]") for i, d in enumerate(raw["datasets"])
    ]
    names = [d.name for d in datasets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MedfoundryError(f"{where}: dataset names must be unique, repeated: {', '.join(dup)}")
    from medfoundry.pool.sampling import SAMPLING_RULES

    sampling = raw.get("sampling", "inv_sqrt")
    if sampling not in SAMPLING_RULES:
        raise MedfoundryError(
            f"{where}: unknown sampling rule '{sampling}' (choose from {', '.join(SAMPLING_RULES)})"
        )
    return PoolSpec(
        name=str(raw.get("name") or "pool"), datasets=datasets, sampling=sampling, source=source
    )


def _dataset_spec(raw: object, base_dir: Path, where: str) -> DatasetSpec:
    if not isinstance(raw, dict):
        raise MedfoundryError(f"{where}: expected a mapping")
    _check_keys(raw, DatasetSpec, where)
    for key in ("name", "root"):
        if not raw.get(key):
            raise MedfoundryError(f"{where}: '{key}' is required")
    layout = raw.get("layout", "auto")
    if layout not in LAYOUTS:
        raise MedfoundryError(
            f"{where}: unknown layout '{layout}' (choose from {', '.join(LAYOUTS)})"
        )
    images = raw.get("images") or []
    images = [images] if isinstance(images, str) else list(images)
    for pattern in images + ([raw["labels"]] if raw.get("labels") else []):
        if "{case}" not in pattern:
            raise MedfoundryError(f"{where}: pattern '{pattern}' must contain '{{case}}'")
    lists = raw.get("case_lists") or []
    return DatasetSpec(
        name=str(raw["name"]),
        root=(base_dir / str(raw["root"])).resolve(),
        layout=layout,
        images=images,
        labels=raw.get("labels"),
        case_lists=[lists] if isinstance(lists, str) else list(lists),
        modality=raw.get("modality"),
        label_map=_label_map(raw.get("label_map"), where),
    )


def _label_map(raw: object, where: str) -> dict[int, str | None] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise MedfoundryError(f"{where}: label_map must map label ids to names")
    out: dict[int, str | None] = {}
    for k, v in raw.items():
        try:
            local = int(k)
        except (TypeError, ValueError):
            raise MedfoundryError(
                f"{where}: label_map key '{k}' is not an integer label id"
            ) from None
        if local <= 0:
            raise MedfoundryError(
                f"{where}: label_map key {local}: 0 is background and ids are positive"
            )
        if v is not None and not (isinstance(v, str) and v.strip()):
            raise MedfoundryError(f"{where}: label_map[{local}] must be a structure name or null")
        out[local] = None if v is None else v.strip()
    return out


def _check_keys(raw: dict, cls: type, where: str, exclude: set[str] = frozenset()) -> None:
    known = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MedfoundryError(
            f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})"
        )
