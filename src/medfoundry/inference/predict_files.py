"""``medfoundry predict``: stream a file or folder of images through a :class:`Predictor`.

Inputs: single files, or nnU-Net-style channel files ``{case}_{0000}.nii.gz`` grouped into one
multi-channel case, or DICOM series folders (hidden files are ignored). One case in memory at a
time. A case that cannot be read or predicted (NaN/Inf voxels included) is reported and skipped; the
others are still written. Outputs: ``{case}{suffix}`` label maps with the input's header, with
probabilities ``{case}.npz`` (``probabilities`` ``(K, Z, Y, X)`` float16, ``class_names``,
``class_ids``), and the record of how they were made (:mod:`medfoundry.inference.prediction_record`):
a rerun keeps a case only when that record matches the model, settings and inputs and its files are
intact. The output folder is created with the first file written.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medfoundry import MedfoundryError
from medfoundry.inference.prediction_record import (
    expected_record,
    record_path,
    why_stale,
    write_record,
)
from medfoundry.io import Volume, read_image, write_volume
from medfoundry.io.dicom import SELECTOR, is_dicom_file, split_selector
from medfoundry.utils.atomic import atomic_path

log = logging.getLogger(__name__)
SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def group_inputs(path: str | os.PathLike) -> dict[str, tuple[list[Path], str]]:
    """``{case: ([channel files in order], output suffix)}`` for a file, a folder of files, or a
    DICOM series folder (a folder holding DICOM files and no volume files is read as one series)."""
    path, choice = split_selector(path)
    if not path.exists():
        raise MedfoundryError(f"{path}: not found")
    if choice is not None:  # one series of a DICOM folder: FOLDER::SERIES
        return {f"{path.name}_{_safe(choice)}": ([Path(f"{path}{SELECTOR}{choice}")], ".nii.gz")}
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    cases: dict[str, tuple[list[Path], str]] = {}
    for f in files:
        suffix = next((s for s in SUFFIXES if f.name.endswith(s)), None)
        if suffix is None:
            continue
        stem = f.name[: -len(suffix)]
        m = _CHANNEL.match(stem)
        case = m["case"] if m and path.is_dir() else stem
        cases.setdefault(case, ([], suffix))[0].append(f)
    if not cases and path.is_dir() and _holds_dicom(path):
        cases[path.name] = ([path], ".nii.gz")  # a DICOM series folder
    if not cases:
        raise MedfoundryError(f"{path}: no images ({', '.join(SUFFIXES)} or DICOM files) found")
    return cases


def _holds_dicom(folder: Path) -> bool:
    """A DICOM file in ``folder`` or its subfolders (DICOM exports nest series in folders)."""
    return any(f.is_file() and is_dicom_file(f) for f in folder.rglob("*"))


def _safe(text: str) -> str:
    """``text`` as a file-name part (a series number, UID or description)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:64]


OUTPUT_TYPES = ("nifti", "dicom-seg")
DICOM_SEG_SUFFIX = "_seg.dcm"


def write_labels(
    labels: Volume, path: str | os.PathLike, class_names: dict[int, str], output_type: str
) -> None:
    """Write a ``(1, Z, Y, X)`` label map as ``output_type``: ``nifti`` (any volume format, by the
    suffix of ``path``, with the input's header) or ``dicom-seg`` (a DICOM SEG referencing the
    DICOM series the labels were predicted from; ``class_names``: ``{id: name}``)."""
    if output_type == "dicom-seg":
        from medfoundry.io.dicom_seg import write_dicom_seg

        if "dicom" not in labels.meta:
            raise MedfoundryError("--output-type dicom-seg needs a DICOM series as input")
        write_dicom_seg(labels, None, class_names, path)
    elif output_type == "nifti":
        write_volume(labels, path)
    else:
        raise MedfoundryError(f"unknown output type {output_type!r}; one of {OUTPUT_TYPES}")


def predict_paths(
    predictor,
    inputs: str | os.PathLike,
    out_dir: str | os.PathLike,
    progress: bool = True,
    output_type: str = "nifti",
    after_case=None,
) -> dict:
    """Predict every case under ``inputs`` into ``out_dir``; returns ``{"written": [...], "kept":
    [...], "failed": {case: reason}, "out_dir": ...}``. A case whose files were made by the same
    model and settings from the same inputs is kept (rerun = resume); any other is predicted again.
    ``output_type="dicom-seg"`` writes ``{case}_seg.dcm`` for DICOM series inputs.
    ``after_case(case, image, prediction)``: called after a case's files are written (e.g. a
    findings report); its errors fail that case like a prediction error."""
    if output_type not in OUTPUT_TYPES:
        raise MedfoundryError(f"unknown output type {output_type!r}; one of {OUTPUT_TYPES}")
    cases = group_inputs(inputs)  # bad input fails before anything is written
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MedfoundryError(f"{out_dir}: exists and is not a folder")
    model_sha256, settings = predictor.model_sha256, predictor.output_settings()
    settings["output_type"] = output_type
    written, failed, kept = [], {}, []
    for case, (files, suffix) in tqdm(
        cases.items(), desc="predict", unit="case", disable=not progress
    ):
        suffix = DICOM_SEG_SUFFIX if output_type == "dicom-seg" else suffix
        outputs = [out_dir / f"{case}{suffix}"]
        if settings["save_probabilities"]:
            outputs.append(out_dir / f"{case}.npz")
        expected = expected_record(model_sha256, settings, files)
        if outputs[0].exists():
            if (reason := why_stale(record_path(out_dir, case), expected, outputs)) is None:
                kept.append(case)
                continue
            log.info("%s: predicting again: %s", case, reason)
        _remove_case(out_dir, case, suffix)  # nothing of another model or try outlives a failure
        try:
            image, pred = _predict_case(predictor, files, case, progress)
            if output_type == "dicom-seg" and "dicom" not in pred.labels.meta:
                raise MedfoundryError(f"{files[0]}: --output-type dicom-seg needs a DICOM series")
        except (MedfoundryError, ValueError, OSError) as exc:
            failed[case] = str(exc)
            log.warning("skipped %s: %s", case, exc)
            continue
        _write_case(pred, outputs, record_path(out_dir, case), expected, output_type)
        if after_case is not None:
            try:
                after_case(case, image, pred)
            except (MedfoundryError, ValueError, OSError) as exc:
                failed[case] = str(exc)
                log.warning("%s: predicted, but %s", case, exc)
                continue
        written.append(case)
    return {"written": written, "kept": kept, "failed": failed, "out_dir": str(out_dir)}


def _predict_case(predictor, files: list[Path], case: str, progress: bool):
    """Read one case and predict it; NaN/Inf voxels are an error naming the file."""
    image = read_image(files)
    check_finite(image, files)
    return image, predictor.predict(image, progress=progress, name=case)


def check_finite(image: Volume, files: list[Path]) -> None:
    """Raise :class:`MedfoundryError` naming the (first) channel file of ``image`` ``(C, Z, Y, X)``
    that holds NaN or infinite voxels, as ``pool build`` refuses them."""
    if np.isfinite(image.array).all():
        return
    bad = (~np.isfinite(image.array)).reshape(image.num_channels, -1).sum(axis=1)  # (C,)
    channel = int(np.flatnonzero(bad)[0])
    path = files[channel] if len(files) == image.num_channels else files[0]
    raise MedfoundryError(
        f"{path}: contains NaN or infinite values ({int(bad.sum()):,} of {image.array.size:,} voxels)"
    )


def _remove_case(out_dir: Path, case: str, suffix: str) -> None:
    """Remove a case's record first (it must never vouch for other files), then its outputs."""
    for path in (record_path(out_dir, case), out_dir / f"{case}{suffix}", out_dir / f"{case}.npz"):
        path.unlink(missing_ok=True)


def _write_case(
    pred, outputs: list[Path], record_file: Path, expected: dict, output_type: str = "nifti"
) -> None:
    """Write the label map ``outputs[0]`` (and probabilities ``outputs[1]``), then their record."""
    if len(outputs) > 1:
        with atomic_path(outputs[1]) as tmp:
            np.savez_compressed(
                tmp,
                probabilities=pred.probabilities,
                class_names=np.array(pred.class_names),
                class_ids=np.array(pred.class_ids),
            )
    names = dict(zip(pred.class_ids, pred.class_names, strict=True))
    write_labels(pred.labels, outputs[0], names, output_type)
    write_record(record_file, expected, outputs)  # last: its presence marks the case done
