"""``medfoundry evaluate PRED_DIR REF_DIR``: per case and class metrics of label maps against references.

Files are paired by case name (the file name without ``.nii.gz``/``.nii``/``.nrrd``/``.mha``/``.mhd``);
a reference without a prediction is an error, extra predictions are ignored with a warning. Spacing
comes from the reference; the prediction must have the reference's shape and spacing (within 1e-3
mm). Writes ``summary.json`` (per case, per class mean, overall mean, undefined counts, the
conventions) and a ``per_case.csv`` beside it.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.evaluation.metrics import all_metrics
from medfoundry.io import read_label
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.jsonfile import write_json
from medfoundry.utils.parallel import map_with_progress

log = logging.getLogger(__name__)
SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
METRICS = ("dice", "iou", "surface_dice", "hd95_mm", "ref_volume_ml", "pred_volume_ml")
CONVENTIONS = (
    "both empty: every metric NaN, left out of means; one empty: dice/iou/surface_dice 0, hd95 NaN "
    "(left out of means, counted in 'undefined'); surfaces: voxels with a 6-connected neighbour "
    "outside the mask; distances in mm between voxel centres; hd95 = max of both directed 95th "
    "percentiles; surface_dice = fraction of both surfaces within tolerance_mm of the other"
)


def case_name(path: Path) -> str | None:
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def list_cases(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise MedfoundryError(f"{folder}: not a folder")
    return {n: p for p in sorted(folder.iterdir()) if (n := case_name(p)) and p.is_file()}


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    out_json: str | os.PathLike | None = None,
    labels: list[int] | None = None,
    tolerance_mm: float = 1.0,
    jobs: int = 1,
    progress: bool = True,
) -> dict:
    """Evaluate every reference in ``ref_dir`` against the same-named prediction in ``pred_dir``.

    ``labels``: the label ids to score (default: every nonzero id in any reference). Returns the
    summary dict, also written to ``out_json`` (and ``per_case.csv`` beside it) when given.
    """
    preds, refs = list_cases(Path(pred_dir)), list_cases(Path(ref_dir))
    if not refs:
        raise MedfoundryError(f"{ref_dir}: no label files ({', '.join(SUFFIXES)})")
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise MedfoundryError(
            f"{len(missing)} reference case(s) have no prediction in {pred_dir}: {', '.join(missing[:5])}"
        )
    extra = sorted(set(preds) - set(refs))
    if extra:
        log.warning("ignoring %d prediction(s) without a reference: %s", len(extra), extra[:5])
    pairs = [(n, str(preds[n]), str(refs[n]), labels, tolerance_mm) for n in refs]
    per_case = dict(
        map_with_progress(_evaluate_case, pairs, jobs, desc="evaluate", progress=progress)
    )
    if labels is None:
        labels = sorted({int(k) for scores in per_case.values() for k in scores})
    summary = summarise(per_case, labels, tolerance_mm)
    if out_json is not None:
        write_json(Path(out_json), summary)
        write_per_case_csv(Path(out_json).with_name("per_case.csv"), per_case)
    return summary


def _evaluate_case(item) -> tuple[str, dict]:
    name, pred_path, ref_path, labels, tol = item
    ref, pred = read_label(ref_path), read_label(pred_path)
    if ref.array.shape != pred.array.shape:
        raise MedfoundryError(
            f"{pred_path}: shape {pred.array.shape[1:]} != reference {ref.array.shape[1:]}"
        )
    if not np.allclose(ref.spacing_mm, pred.spacing_mm, atol=1e-3):
        raise MedfoundryError(
            f"{pred_path}: spacing {list(pred.spacing_mm)} != reference {list(ref.spacing_mm)} mm"
        )
    r, p = ref.array[0], pred.array[0]
    ids = labels if labels is not None else sorted(int(v) for v in np.unique(r) if v != 0)
    return name, {str(i): all_metrics(p == i, r == i, ref.spacing_mm, tol) for i in ids}


def summarise(per_case: dict[str, dict], labels: list[int], tolerance_mm: float) -> dict:
    """Means per class over cases, and overall means over classes, NaN-aware."""
    mean, undefined = {}, {}
    for lab in map(str, labels):
        rows = [c[lab] for c in per_case.values() if lab in c]
        mean[lab], undefined[lab] = {}, {}
        for m in METRICS:
            values = [r[m] for r in rows if not math.isnan(r[m])]
            mean[lab][m] = float(np.mean(values)) if values else None
            undefined[lab][m] = len(rows) - len(values)
    overall = {
        m: (
            float(np.mean(v))
            if (v := [mean[k][m] for k in mean if mean[k][m] is not None])
            else None
        )
        for m in METRICS
        if not m.endswith("volume_ml")
    }
    return {
        "tolerance_mm": tolerance_mm,
        "labels": labels,
        "num_cases": len(per_case),
        "mean": mean,
        "overall": overall,
        "undefined": undefined,
        "conventions": CONVENTIONS,
        "cases": {n: {k: _clean(v) for k, v in c.items()} for n, c in per_case.items()},
    }


def _clean(scores: dict) -> dict:
    """NaN is not JSON: written as null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scores.items()}


def write_per_case_csv(path: Path, per_case: dict[str, dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "label", *METRICS])
        for name, scores in per_case.items():
            for lab, s in scores.items():
                w.writerow(
                    [name, lab, *("" if math.isnan(s[m]) else f"{s[m]:.6g}" for m in METRICS)]
                )
