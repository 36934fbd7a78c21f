"""``medfoundry pool build``: read a pool file, validate every case, write ``POOL_DIR/pool.json``.

``pool.json`` (format ``medfoundry.pool/1``), human-readable, keys sorted:

* ``name``, ``sampling`` (the rule name), ``medfoundry_version``.
* ``labels``: global structure name -> global id (``background`` is 0).
* ``datasets``: name -> ``{num_cases, modality (one per channel), num_channels, layout, root,
  labelled (false: image-only, no label files), label_map (local id -> name or null), local_to_global (local id -> global id, null -> 0)}``.
* ``cases``: list of ``{id ("<dataset>/<case>"), dataset, images (absolute paths, one per channel or one
  multi-channel file), label (null: an image-only case of a dataset without labels, ``labelled:
  false`` in its dataset record), valid_labels (global foreground ids its dataset annotates), shape (Z, Y, X),
  spacing (Z, Y, X mm), sampling_probability (sums to 1 over the pool), label_values (local ids
  present), nonzero_bbox}``.
* ``skipped``: ``[{case, file, reason}]`` for cases dropped by ``--skip-invalid`` (an image without a
  label file is one, with reason ``no label file``).

Next to it, ``foreground_samples.npz`` holds per case (key = case id) a ``(C, N)`` sample of foreground
intensities, which ``plan`` uses for dataset statistics without reading the images again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError, __version__
from medfoundry.pool.labels import LabelSpace
from medfoundry.pool.layouts import CaseFiles, DatasetLayout, list_cases
from medfoundry.pool.modality import warn_unknown_channels
from medfoundry.pool.sampling import sampling_probabilities
from medfoundry.pool.spec import DatasetSpec, PoolSpec, load_pool_spec
from medfoundry.pool.validate import CaseInfo, Problem, inspect_case
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.jsonfile import read_json, write_json
from medfoundry.utils.names import check_case_id
from medfoundry.utils.parallel import map_with_progress

log = logging.getLogger(__name__)
POOL_FORMAT = "medfoundry.pool/1"


class PoolValidationError(MedfoundryError):
    """Some cases failed validation; ``problems`` lists them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        cases = len({p.case for p in problems})
        super().__init__(
            f"{len(problems)} problem(s) in {cases} case(s); nothing written (use --skip-invalid to drop them)"
        )

    def report(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def build_pool(
    spec: PoolSpec | str | os.PathLike,
    out_dir: str | os.PathLike,
    skip_invalid: bool = False,
    jobs: int = 1,
    sampling: str | None = None,
    progress: bool = True,
) -> Path:
    """Validate every case of a pool spec and write ``out_dir/pool.json``; returns its path.

    Raises :class:`PoolValidationError` (listing every problem) unless ``skip_invalid``.
    """
    if not isinstance(spec, PoolSpec):
        spec = load_pool_spec(spec)
    rule = sampling or spec.sampling
    layouts = {d.name: list_cases(d) for d in spec.datasets}
    label_maps = {d.name: _resolve_label_map(d, layouts[d.name]) for d in spec.datasets}
    space = LabelSpace.from_label_maps([label_maps[d.name] for d in spec.datasets])

    work = [
        (d.name, c, frozenset(label_maps[d.name]))
        for d in spec.datasets
        for c in layouts[d.name].cases
    ]
    results = list(map_with_progress(_inspect, work, jobs, desc="validate", progress=progress))
    problems = [p for r in results if isinstance(r, list) for p in r]
    problems += _channel_problems(results, work)
    problems += _unlabelled_problems(spec, layouts)
    if problems and not skip_invalid:
        raise PoolValidationError(problems)
    bad_cases = {p.case for p in problems}
    valid = [
        (name, info)
        for (name, _, _), info in zip(work, results, strict=True)
        if isinstance(info, CaseInfo) and f"{name}/{info.case}" not in bad_cases
    ]
    if not valid:
        raise MedfoundryError("no valid cases left in the pool")

    probs = sampling_probabilities([name for name, _ in valid], rule)
    files = {(name, c.case): c for name, c, _ in work}
    datasets = _dataset_records(spec, layouts, label_maps, space, valid)
    cases = []
    for (name, info), p in zip(valid, probs, strict=True):
        f = files[(name, info.case)]
        l2g = datasets[name]["local_to_global"]
        cases.append(
            {
                "id": f"{name}/{info.case}",
                "dataset": name,
                "images": [str(x) for x in f.images],
                "label": None if f.label is None else str(f.label),
                "valid_labels": sorted({g for g in l2g.values() if g != 0}),
                "shape": info.shape_zyx,
                "spacing": info.spacing_mm,
                "sampling_probability": round(p, 12),
                "label_values": info.label_values,
                "nonzero_bbox": info.nonzero_bbox,
            }
        )
    pool = {
        "format": POOL_FORMAT,
        "name": spec.name,
        "medfoundry_version": __version__,
        "sampling": rule,
        "labels": space.to_dict(),
        "datasets": datasets,
        "cases": cases,
        "skipped": [{"case": p.case, "file": p.file, "reason": p.reason} for p in problems],
    }
    out = Path(out_dir)
    with atomic_path(out / "foreground_samples.npz") as tmp:
        np.savez(tmp, **{f"{name}/{info.case}": info.fg_samples for name, info in valid})
    path = write_json(out / "pool.json", pool)  # last: its presence means the pool is complete
    log.info(
        "pool '%s': %d cases, %d datasets, %d classes -> %s",
        spec.name,
        len(cases),
        len(datasets),
        len(space) - 1,
        path,
    )
    return path


def load_pool(pool_dir: str | os.PathLike) -> dict:
    """Read ``POOL_DIR/pool.json`` (or a path to the file itself).

    Case ids are checked again (the file may have been edited by hand): every consumer builds paths
    from them, so each must be ``<dataset>/<case>`` with two plain names.
    """
    path = Path(pool_dir)
    path = path / "pool.json" if path.is_dir() or not path.suffix else path
    pool = read_json(path, "pool.json (run 'medfoundry pool build' first)")
    if not isinstance(pool, dict) or pool.get("format") != POOL_FORMAT:
        raise MedfoundryError(f"{path}: not a {POOL_FORMAT} file")
    _check_case_ids(pool, path)
    return pool


def _check_case_ids(pool: dict, path: Path) -> None:
    """Each case's ``id`` is ``<dataset>/<case>`` (plain names) and starts with its ``dataset``."""
    cases = pool.get("cases")
    if not isinstance(cases, list):
        raise MedfoundryError(f"{path}: 'cases' must be a list")
    for i, case in enumerate(cases):
        where = f"{path}: cases[{i}]"
        case_id = case.get("id") if isinstance(case, dict) else None
        check_case_id(case_id, f"{where}: case id")  # type: ignore[arg-type]
        if case_id.split("/")[0] != case.get("dataset"):
            raise MedfoundryError(
                f"{where}: case id {case_id!r} does not start with its dataset "
                f"{case.get('dataset')!r}"
            )


def _inspect(item: tuple[str, CaseFiles, frozenset]) -> CaseInfo | list[Problem]:
    name, files, allowed = item
    out = inspect_case(files, set(allowed))
    if isinstance(out, list):
        for p in out:
            p.case = f"{name}/{p.case}"
    return out


def _resolve_label_map(spec: DatasetSpec, layout: DatasetLayout) -> dict[int, str | None]:
    if not layout.labelled:  # image-only: annotates nothing
        if spec.label_map:
            why = "images_only uses no labels" if spec.images_only else "it has no label files"
            raise MedfoundryError(f"dataset '{spec.name}': a label_map is given but {why}")
        return {}
    if spec.label_map is not None:
        return spec.label_map
    if layout.label_names:
        return {k: v.strip().lower().replace(" ", "_") for k, v in layout.label_names.items()}
    raise MedfoundryError(
        f"dataset '{spec.name}': no label_map given and no label names in a dataset.json"
    )


def _modalities(spec: DatasetSpec, layout: DatasetLayout, num_channels: int) -> list[str]:
    if spec.modality is None:  # free channel names of a dataset.json: allowed, with a warning
        warn_unknown_channels(layout.modality, f"dataset '{spec.name}' ({spec.root})")
    mod = spec.modality if spec.modality is not None else layout.modality
    mods = [mod] * num_channels if isinstance(mod, str) else list(mod or [])
    if not mods:
        raise MedfoundryError(
            f"dataset '{spec.name}': modality unknown; set 'modality' (CT, MRI, ...)"
        )
    if len(mods) == 1 and num_channels > 1:
        mods = mods * num_channels
    if len(mods) != num_channels:
        raise MedfoundryError(
            f"dataset '{spec.name}': {len(mods)} modalities given for {num_channels} channels"
        )
    return [str(m) for m in mods]


def _channel_problems(results: list, work: list) -> list[Problem]:
    """Every case of the pool must have the same number of channels (one network reads them all)."""
    counts = [
        (name, files, r.num_channels)
        for (name, files, _), r in zip(work, results, strict=True)
        if isinstance(r, CaseInfo)
    ]
    if not counts:
        return []
    values = [c for _, _, c in counts]
    common = max(set(values), key=values.count)
    return [
        Problem(
            f"{name}/{files.case}",
            ", ".join(str(p) for p in files.images),
            f"image has {c} channel(s), most of the pool has {common}",
        )
        for name, files, c in counts
        if c != common
    ]


def _unlabelled_problems(spec: PoolSpec, layouts: dict[str, DatasetLayout]) -> list[Problem]:
    """An image without a label file (nnU-Net, MSD) is reported like any damaged case."""
    return [
        Problem(f"{d.name}/{c.case}", str(_first_existing(c.images)), "no label file")
        for d in spec.datasets
        for c in layouts[d.name].unlabelled
    ]


def _first_existing(paths: list[Path]) -> Path:
    return next((p for p in paths if p.exists()), paths[0])


def _dataset_records(spec, layouts, label_maps, space, valid) -> dict:
    records = {}
    for d in spec.datasets:
        infos = [i for n, i in valid if n == d.name]
        channels = infos[0].num_channels if infos else 1
        records[d.name] = {
            "num_cases": len(infos),
            "modality": _modalities(d, layouts[d.name], channels),
            "num_channels": channels,
            "layout": layouts[d.name].layout,
            "root": str(d.root),
            "labelled": layouts[d.name].labelled,
            "label_map": {str(k): v for k, v in sorted(label_maps[d.name].items())},
            "local_to_global": space.local_to_global(label_maps[d.name]),
        }
    return records
