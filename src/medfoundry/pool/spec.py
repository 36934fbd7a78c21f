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

A dataset without labels (an nnU-Net or MSD folder with no ``labelsTr``, or a folder layout with
``images`` and no ``labels``; no ``label_map``) is *image-only*: its cases have no label and annotate
no class, so supervised training leaves them out and self-supervised training (``--objective ssl``)
uses them. ``images_only: true`` makes a labelled dataset one (its labels are not read).

``label_map`` maps every local label id to a global structure name. The same name in two datasets is
the same global class. A local id mapped to ``null`` is *dropped*: its voxels become background (0)
in the pool and no global class is made for it; the dataset then does not annotate that structure.
When ``label_map`` is omitted for an nnU-Net/MSD dataset, the names in its ``dataset.json`` are used
(lower-cased, spaces replaced by ``_``).

The pool and dataset names become parts of output paths, so they must be plain names (letters,
digits, ``_ . + -``, see :func:`medfoundry.utils.names.check_name`); ``images``/``labels`` patterns
and ``case_lists`` files must stay inside the dataset root (relative, no ``..``); ``modality`` must be
a known name (:mod:`medfoundry.pool.modality`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import yaml

from medfoundry import MedfoundryError
from medfoundry.pool.modality import check_modality
from medfoundry.utils.names import check_name

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
    """Folder layout: label filename pattern with ``{case}`` (none: an image-only dataset)."""
    case_lists: list[str] = field(default_factory=list)
    """Optional files (relative to ``root``) listing case names, one per line; their union is used."""
    modality: str | list[str] | None = None
    """``CT``, ``MRI``... for all channels, or one per channel. Default: from ``dataset.json``."""
    label_map: dict[int, str | None] | None = None
    """Local label id -> global structure name (``null``: dropped, becomes background)."""
    images_only: bool = False
    """Use the dataset's images without its labels (an image-only dataset, for self-supervised
    training), e.g. a target whose labels must stay out of pretraining."""
    channels: list[int] | None = None
    """Only these input channels, in this order (0-based; one file per channel, as nnU-Net's
    ``_0000``, ``_0001``...), e.g. ``[0]`` to pool the FLAIR channel of a FLAIR + T1c dataset with
    one-channel datasets. Default: every channel."""


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
    name = str(raw.get("name") or "pool")  # a label only (no path is made from it): one line
    if not name.isprintable():
        raise MedfoundryError(f"{where}: pool name {name!r} must be one line of printable text")
    return PoolSpec(name=name, datasets=datasets, sampling=sampling, source=source)


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
    images = _str_list(raw.get("images"), "images", where)
    for pattern in images + ([raw["labels"]] if raw.get("labels") else []):
        _check_pattern(pattern, where)
    lists = _str_list(raw.get("case_lists"), "case_lists", where)
    for name in lists:
        _inside_root(name, "case list", where)
    return DatasetSpec(
        name=_plain_name(raw["name"], "dataset name", where),
        root=(base_dir / str(raw["root"])).resolve(),
        layout=layout,
        images=images,
        labels=raw.get("labels"),
        case_lists=lists,
        modality=_modality(raw.get("modality"), where),
        channels=_channels(raw.get("channels"), where),
        images_only=_flag(raw.get("images_only", False), "images_only", where),
        label_map=_label_map(raw.get("label_map"), where),
    )


def _plain_name(value: object, what: str, where: str) -> str:
    """``value`` as a name safe to use as one path component; else a one-line error at ``where``."""
    try:
        return check_name(value, what)
    except MedfoundryError as err:
        raise MedfoundryError(f"{where}: {err}") from None


def _str_list(raw: object, key: str, where: str) -> list[str]:
    """A string or a list of strings (``images``, ``case_lists``) as a list."""
    items = [] if not raw else [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise MedfoundryError(f"{where}: '{key}' must be a path or a list of paths")
    return list(items)


def _check_pattern(pattern: object, where: str) -> None:
    """An ``images``/``labels`` pattern: a path inside the root with ``{case}`` and no other braces."""
    if not isinstance(pattern, str) or "{case}" not in pattern:
        raise MedfoundryError(f"{where}: pattern {pattern!r} must contain '{{case}}'")
    if re.search(r"[{}]", pattern.replace("{case}", "")):
        raise MedfoundryError(f"{where}: pattern {pattern!r} may hold no braces but '{{case}}'")
    _inside_root(pattern, "pattern", where)


def _inside_root(relative: str, what: str, where: str) -> None:
    """Refuse a path that would leave the dataset root: absolute, a drive, or a ``..`` component."""
    parts = re.split(r"[\\/]", relative)
    if (
        PurePosixPath(relative).is_absolute()
        or PureWindowsPath(relative).drive
        or PureWindowsPath(relative).is_absolute()
        or ".." in parts
    ):
        raise MedfoundryError(
            f"{where}: {what} {relative!r} leaves the dataset root (absolute path or '..'); "
            "give a path relative to 'root'"
        )


def _flag(raw: object, key: str, where: str) -> bool:
    if not isinstance(raw, bool):
        raise MedfoundryError(f"{where}: '{key}' must be true or false, got {raw!r}")
    return raw


def _channels(raw: object, where: str) -> list[int] | None:
    if raw is None:
        return None
    ok = isinstance(raw, list) and raw and all(type(c) is int and c >= 0 for c in raw)
    if not ok or len(set(raw)) != len(raw):
        raise MedfoundryError(
            f"{where}: 'channels' must be a list of distinct channel numbers (0, 1, ...), got {raw!r}"
        )
    return list(raw)


def _modality(raw: object, where: str) -> str | list[str] | None:
    """``modality``: one known name for all channels, or a list with one per channel."""
    if raw is None:
        return None
    if isinstance(raw, list):
        return [check_modality(m, f"{where}: modality[{i}]") for i, m in enumerate(raw)]
    return check_modality(raw, where)


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
