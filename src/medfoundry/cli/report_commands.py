"""``medfoundry report``: findings of label maps (volumes, lesions, diameters, intensities) as JSON
and a readable HTML page per case."""

from __future__ import annotations

import logging
from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.cli.arg_types import positive_int

log = logging.getLogger(__name__)


def add_report(sub, common) -> None:
    """Register ``medfoundry report``."""
    p = sub.add_parser(
        "report",
        parents=[common],
        help="findings of label maps: volumes, lesions, diameters, intensities (JSON + HTML)",
        description="For each label map (a file, or a folder of them) and each named structure: "
        "its "
        "volume (ml), its connected components (26-connected; lesions) with each one's volume, "
        "longest 3D and longest axial diameter (mm, between voxel centres) and centroid, and with "
        "an image the intensity mean, sd, median, p5 and p95 inside it (HU on CT). Writes "
        "OUT_DIR/{case}_findings.json and a self-contained OUT_DIR/{case}_findings.html with "
        "overlay images (and a PDF with --pdf). Class names come from -m MODEL, --names "
        "dataset.json, or default to class_<id>.",
    )
    p.add_argument(
        "-l", "--labels", required=True, type=Path, metavar="LABELS", help="label map or folder"
    )
    p.add_argument(
        "-i",
        "--image",
        type=Path,
        metavar="IMAGE",
        help="the image (a file, nnU-Net _0000 channel files in a folder, or a DICOM series "
        "folder); for a folder of label maps, a folder matched by case name",
    )
    p.add_argument("-o", "--out", required=True, type=Path, metavar="OUT_DIR")
    names = p.add_mutually_exclusive_group()
    names.add_argument(
        "-m", "--model", type=Path, metavar="MODEL", help="class names (and modality) of a model"
    )
    names.add_argument(
        "--names",
        type=Path,
        metavar="DATASET_JSON",
        help='class names from a dataset.json "labels" mapping (and its modality)',
    )
    p.add_argument(
        "--modality",
        metavar="NAME",
        help="CT, MR, PET... (CT reports HU; default: the DICOM image's, else MODEL's or "
        "dataset.json's)",
    )
    p.add_argument("--pdf", action="store_true", help="also write OUT_DIR/{case}_findings.pdf")
    p.add_argument(
        "--min-voxels",
        type=positive_int,
        default=1,
        metavar="N",
        help="leave out components smaller than N voxels (default 1: list all)",
    )
    p.set_defaults(func=_report)


def _report(a) -> None:
    from medfoundry.io import read_image, read_label
    from medfoundry.workflows.findings_report import write_findings_report

    pairs = _pair_inputs(a.labels, a.image)
    names, known_modality = _names_and_modality(a.model, a.names)
    for case, (label_file, image_files) in pairs.items():
        labels = read_label(label_file)
        image = read_image(image_files) if image_files else None
        # a DICOM series carries its modality (Volume.meta); a NIfTI file does not
        modality = a.modality or (image.meta.get("modality") if image else None) or known_modality
        findings = write_findings_report(
            labels,
            names if names is not None else _default_names(labels),
            a.out,
            image=image,
            modality=modality.upper() if modality else None,
            case=case,
            pdf=a.pdf,
            min_component_voxels=a.min_voxels,
        )
        present = [s for s in findings["structures"] if s["voxels"]]
        text = ", ".join(f"{s['name']} {s['volume_ml']:.1f} ml" for s in present) or "no structure"
        suffixes = ("json", "html", "pdf") if a.pdf else ("json", "html")
        print(f"{case}: {text}")
        print("  wrote " + ", ".join(str(a.out / f"{case}_findings.{s}") for s in suffixes))


def _pair_inputs(labels: Path, image: Path | None) -> dict[str, tuple[Path, list[Path] | None]]:
    """``{case: (label file, image files or None)}``; images are matched to label maps by case."""
    from medfoundry.inference.predict_files import group_inputs

    label_cases = group_inputs(labels)
    for case, (files, _) in label_cases.items():
        if len(files) != 1:
            raise MedfoundryError(f"{labels}: case '{case}' has {len(files)} label files, not one")
    images = group_inputs(image) if image is not None else {}
    if labels.is_file() and len(images) == 1:  # one label map, one image: paired whatever the names
        images = {next(iter(label_cases)): next(iter(images.values()))}
    if missing := [c for c in label_cases if image is not None and c not in images]:
        raise MedfoundryError(
            f"{image}: no image for case(s) {', '.join(sorted(missing)[:5])} of {labels}"
        )
    return {
        c: (f[0], images[c][0] if image is not None else None) for c, (f, _) in label_cases.items()
    }


def _names_and_modality(model: Path | None, dataset_json: Path | None):
    """``(id -> name or None, modality or None)`` from a model or a dataset.json."""
    if model is not None:
        return _model_names(model)
    if dataset_json is not None:
        return _dataset_json_names(dataset_json)
    return None, None


def _model_names(path: Path) -> tuple[dict[int, str], str | None]:
    """The ids a :class:`~medfoundry.inference.predictor.Predictor` of this model writes by
    default, their names, and the modality of a one-dataset model."""
    from medfoundry.inference.predictor import output_pairs
    from medfoundry.runs.checkpoint import load_checkpoint, resolve_checkpoint

    desc = load_checkpoint(resolve_checkpoint(path), weights=False).description()
    g_names = {int(i): str(n) for n, i in desc["labels"].items() if int(i)}
    names = {int(o): g_names[int(g)] for g, o in output_pairs(desc)}
    plans, datasets = desc["plan"]["datasets"], desc.get("datasets", {})
    one = next(iter(plans)) if len(plans) == 1 else None
    return names, _first(datasets[one].get("modality")) if one in datasets else None


def _dataset_json_names(path: Path) -> tuple[dict[int, str], str | None]:
    """nnU-Net v2 ``{"liver": 1}`` or MSD ``{"1": "liver"}`` labels, background dropped."""
    from medfoundry.utils.jsonfile import read_json

    d = read_json(path, "dataset.json")
    labels = d.get("labels") if isinstance(d, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise MedfoundryError(f'{path}: no "labels" mapping')
    names = {}
    for k, v in labels.items():
        if isinstance(v, int) and not isinstance(v, bool):
            names[v] = str(k)
        elif str(k).isdigit() and isinstance(v, str):
            names[int(k)] = v
        else:
            raise MedfoundryError(f'{path}: "labels" entry {k!r}: {v!r} is not a name and an id')
    names.pop(0, None)
    modality = d.get("channel_names") or d.get("modality")
    return names, _first(modality)


def _first(modality) -> str | None:
    """Channel 0's modality of ``{"0": "CT"}``, ``["CT"]`` or ``"CT"``."""
    if isinstance(modality, dict):
        modality = modality.get("0")
    if isinstance(modality, list):
        modality = modality[0] if modality else None
    return str(modality) if modality else None


def _default_names(labels) -> dict[int, str]:
    """``class_<id>`` for every positive id in the label map."""
    import numpy as np
    from scipy import ndimage

    lab = labels.array[0]
    if int(lab.max()) <= 65535:  # one pass, no copy
        ids = [i + 1 for i, box in enumerate(ndimage.find_objects(lab)) if box is not None]
    else:
        ids = [int(i) for i in np.unique(lab) if i > 0]
    return {i: f"class_{i}" for i in ids}
