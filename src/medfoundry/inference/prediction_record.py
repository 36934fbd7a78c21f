"""How a case's prediction files were made, so that a rerun keeps only what it would write again.

One JSON record per case, ``OUT/.medfoundry/<case>.json`` (format ``medfoundry.prediction/1``),
written atomically after the case's outputs:

- ``model_sha256``: sha256 of the model file (:attr:`Predictor.model_sha256`);
- ``settings``: every setting that changes the output (:meth:`Predictor.output_settings`);
- ``inputs``: each input file's absolute path, size and mtime (ns); a DICOM series folder lists its
  files;
- ``outputs``: file name -> sha256 of the label map and, with probabilities, ``{case}.npz``.

A case is kept only when its outputs exist, the record matches the current model, settings and
inputs, and each output still has the recorded sha256 (a truncated, empty or edited file does
not). The hidden folder keeps the records out of ``medfoundry evaluate``'s pairing (by image suffix).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from medfoundry.utils.atomic import atomic_path

RECORD_FORMAT = "medfoundry.prediction/1"
RECORD_DIR = ".medfoundry"


def record_path(out_dir: str | os.PathLike, case: str) -> Path:
    """``OUT/.medfoundry/<case>.json``."""
    return Path(out_dir) / RECORD_DIR / f"{case}.json"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 16 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def describe_inputs(files: list[Path]) -> list[dict]:
    """``[{"path", "size", "mtime_ns"}]`` per input file (every file under a DICOM series folder,
    ``FOLDER::SERIES`` included)."""
    from medfoundry.io.dicom import split_selector

    paths = []
    for f in files:
        f = split_selector(f)[0].resolve()
        paths += sorted(p for p in f.rglob("*") if p.is_file()) if f.is_dir() else [f]
    return [
        {"path": str(p), "size": (st := p.stat()).st_size, "mtime_ns": st.st_mtime_ns}
        for p in paths
    ]


def expected_record(model_sha256: str, settings: dict, files: list[Path]) -> dict:
    """What a record must say (all but ``outputs``) for a case's files to be kept."""
    return {
        "format": RECORD_FORMAT,
        "model_sha256": model_sha256,
        "settings": settings,
        "inputs": describe_inputs(files),
    }


def why_stale(record_file: Path, expected: dict, outputs: list[Path]) -> str | None:
    """None when ``outputs`` are what ``expected`` would write again, else why they are not."""
    if missing := [p.name for p in outputs if not p.is_file()]:
        return f"{missing[0]} is missing"
    try:
        record = json.loads(record_file.read_text())
    except FileNotFoundError:
        return "no record of how it was made"
    except (OSError, ValueError):
        return f"its record {record_file} is unreadable"
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return f"its record {record_file} is not a {RECORD_FORMAT} record"
    if record.get("model_sha256") != expected["model_sha256"]:
        return "it was made by another model"
    if (old := record.get("settings")) != expected["settings"]:
        keys = sorted(
            k for k in expected["settings"] if (old or {}).get(k) != expected["settings"][k]
        )
        return f"it was made with other settings ({', '.join(keys) or 'unknown'})"
    if record.get("inputs") != expected["inputs"]:
        return "its input files changed"
    recorded = record.get("outputs") or {}
    for p in outputs:
        if recorded.get(p.name) != sha256_file(p):
            return f"{p.name} is not the file recorded (empty, truncated or changed since)"
    return None


def write_record(record_file: Path, expected: dict, outputs: list[Path]) -> None:
    """Write the record for ``outputs`` (already complete) atomically."""
    record = {**expected, "outputs": {p.name: sha256_file(p) for p in outputs}}
    with atomic_path(record_file) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
