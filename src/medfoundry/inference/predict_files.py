"""``medfoundry predict``: stream a file or folder of images through a :class:`Predictor`.

Inputs: single files, or nnU-Net-style channel files ``{case}_{0000}.nii.gz`` grouped into one
multi-channel case, or DICOM series folders. One case in memory at a time. A case that cannot be read
or predicted is reported and skipped; the others are still written. Outputs: ``{case}{suffix}``
label maps with the input's header, and with probabilities ``{case}.npz`` (``probabilities``
``(K, Z, Y, X)`` float16, ``class_names``, ``class_ids``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medfoundry import MedfoundryError
from medfoundry.io import read_image, write_volume
from medfoundry.utils.atomic import atomic_path

log = logging.getLogger(__name__)
SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def group_inputs(path: str | os.PathLike) -> dict[str, tuple[list[Path], str]]:
    """``{case: ([channel files in order], output suffix)}`` for a file, a folder of files, or a
    DICOM series folder (a folder holding no volume files is read as one series)."""
    path = Path(path)
    if not path.exists():
        raise MedfoundryError(f"{path}: not found")
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    cases: dict[str, tuple[list[Path], str]] = {}
    for f in files:
        suffix = next((s for s in SUFFIXES if f.name.endswith(s)), None)
        if suffix is None:
            continue
        stem = f.name[: -len(suffix)]
        m = _CHANNEL.match(stem)
        case = m["case"] if m and path.is_dir() else stem
        cases.setdefault(case, ([], suffix))[0].append(f)
    if not cases and path.is_dir():
        cases[path.name] = ([path], ".nii.gz")  # a DICOM series folder
    if not cases:
        raise MedfoundryError(f"{path}: no images ({', '.join(SUFFIXES)}) found")
    return cases


def predict_paths(
    predictor, inputs: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True
) -> dict:
    """Predict every case under ``inputs`` into ``out_dir``; returns ``{"written": [...],
    "failed": {case: reason}}``. Cases whose output exists already are kept (rerun = resume)."""
    cases = group_inputs(inputs)  # bad input fails before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, failed, kept = [], {}, []
    for case, (files, suffix) in tqdm(
        cases.items(), desc="predict", unit="case", disable=not progress
    ):
        target = out_dir / f"{case}{suffix}"
        if target.exists():
            kept.append(case)
            continue
        try:
            image = read_image(files)
            pred = predictor.predict(image)
        except (MedfoundryError, ValueError, OSError) as exc:
            failed[case] = str(exc)
            log.warning("skipped %s: %s", case, exc)
            continue
        if pred.probabilities is not None:
            with atomic_path(out_dir / f"{case}.npz") as tmp:
                np.savez_compressed(
                    tmp,
                    probabilities=pred.probabilities,
                    class_names=np.array(pred.class_names),
                    class_ids=np.array(pred.class_ids),
                )
        write_volume(pred.labels, target)  # last: its presence marks the case done
        written.append(case)
    return {"written": written, "kept": kept, "failed": failed, "out_dir": str(out_dir)}
