"""``medfoundry deid``: DICOM de-identification by the PS3.15 Basic Application Level
Confidentiality Profile (Annex E, table E.1-1), applied by the kept library dicom-anonymizer
(its action table for the 2026c edition of the standard), with a report of what changed.

The report counts, per attribute keyword, how many files had it removed, emptied or replaced; it
never holds a value, a file name or a folder name of the input (either may carry a patient's name).
Output files are named by position only: ``OUT/series_<k>/<n>.dcm``. UIDs are replaced
consistently within one run (a series stays one series; a SEG keeps pointing at its images).
Afterwards every output file is searched for the input's identifying values (names, IDs, dates of
birth, accession numbers, institutions): a hit is an error and nothing is left in ``OUT``.
Pixel data is not altered: files flagged BurnedInAnnotation=YES are counted in the report.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from importlib.metadata import version
from pathlib import Path

from tqdm import tqdm

from medfoundry import MedfoundryError
from medfoundry.io.dicom import is_dicom_file, require

RULES = "dicomfields_2026c"
# Attributes whose input values are searched for in the output (tags of PS3.15 E.1-1).
_IDENTIFYING = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientAddress",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StudyID",
)


def deidentify(
    in_path: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True
) -> dict:
    """De-identify every DICOM file under ``in_path`` (a file or folder, subfolders included) into
    the new folder ``out_dir``; returns the report, also written as ``OUT/deid_report.json``."""
    anonymizer = require("dicomanonymizer.simpledicomanonymizer")

    in_path, out_dir = Path(in_path), Path(out_dir)
    if not in_path.exists():
        raise MedfoundryError(f"{in_path}: not found")
    _check_out(in_path, out_dir)
    files = _dicom_files(in_path)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    anonymizer.dictionary.clear()  # UIDs map consistently within this run only
    actions = anonymizer.initialize_actions(RULES)
    uid_actions = (anonymizer.replace_UID, anonymizer.delete_or_empty_or_replace_UID)
    uid_tags = {t for t, a in actions.items() if a in uid_actions and len(t) == 2}
    old_uids: set[str] = set()
    changes: dict[str, Counter] = {}
    secrets: set[str] = set()
    series_index: dict[str, int] = {}
    per_series: Counter = Counter()
    burned = private = 0
    try:
        for f in tqdm(files, desc="deid", unit="file", disable=not progress):
            ds = _read(f)
            secrets |= _identifying_values(ds)
            burned += str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
            before = _snapshot(ds)
            private += sum(1 for e in ds if e.tag.is_private)
            old_uids |= _uids(ds, uid_tags)
            anonymizer.anonymize_dataset(ds, base_rules_gen=lambda: actions)
            _replace_nested_uids(ds, uid_tags, anonymizer.get_UID)
            _mark(ds)
            if "SOPInstanceUID" in ds and getattr(ds, "file_meta", None) is not None:
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            _count_changes(before, _snapshot(ds), changes)
            k = series_index.setdefault(str(ds.get("SeriesInstanceUID", "")), len(series_index))
            target = partial / f"series_{k:03d}" / f"{per_series[k]:05d}.dcm"
            per_series[k] += 1
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=False)
        hits = _residual_hits(partial, secrets, old_uids)
        if hits:
            raise MedfoundryError(
                f"de-identification left {hits} identifying value(s) in the output; nothing written"
            )
        report = _report(len(files), len(series_index), changes, private, burned)
        (partial / "deid_report.json").write_text(json.dumps(report, indent=2) + "\n")
        partial.rename(out_dir) if not out_dir.exists() else _move_into(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return report


def _dicom_files(in_path: Path) -> list[Path]:
    candidates = [in_path] if in_path.is_file() else sorted(in_path.rglob("*"))
    files = [p for p in candidates if p.is_file() and is_dicom_file(p)]
    if not files:
        raise MedfoundryError(f"{in_path}: no DICOM files found")
    return files


def _check_out(in_path: Path, out_dir: Path) -> None:
    """OUT is new (or an empty folder) and outside IN, so no input is overwritten or re-read."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MedfoundryError(f"{out_dir}: exists and is not an empty folder")
    src = in_path.resolve()
    if in_path.is_dir() and (out_dir.resolve() == src or src in out_dir.resolve().parents):
        raise MedfoundryError(f"{out_dir}: must not be inside the input folder")


def _read(path: Path):
    import pydicom

    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - one named error for any unreadable file
        raise MedfoundryError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from exc


def _identifying_values(ds) -> set[str]:
    """The input's identifying strings worth searching for (3+ characters, not placeholders)."""
    values = set()
    for key in _IDENTIFYING:
        for v in str(ds.get(key, "") or "").replace("^", " ").split():
            if len(v) >= 3 and v.upper() not in {"ANONYMOUS", "NONE", "UNKNOWN"}:
                values.add(v)
    return values


def _snapshot(ds) -> dict[str, object]:
    """``{keyword or tag: value}`` of the top-level elements (sequences by their length)."""
    out = {}
    for e in ds:
        key = e.keyword or f"({e.tag.group:04X},{e.tag.element:04X})"
        out[key] = len(e.value) if e.VR == "SQ" else (None if e.tag == 0x7FE00010 else e.value)
    return out


def _count_changes(before: dict, after: dict, changes: dict[str, Counter]) -> None:
    for key, value in before.items():
        if key not in after:
            action = "removed"
        elif after[key] in ("", None, 0) and value not in ("", None, 0):
            action = "emptied"
        elif after[key] != value:
            action = "replaced"
        else:
            continue
        changes.setdefault(key, Counter())[action] += 1
    for key in after.keys() - before.keys():
        changes.setdefault(key, Counter())["added"] += 1


def _mark(ds) -> None:
    """PatientIdentityRemoved and the method, as PS3.15 E.1.1 asks of a de-identified object."""
    from pydicom.dataset import Dataset

    ds.PatientIdentityRemoved = "YES"
    method = f"PS3.15 E.1 Basic; dicom-anonymizer {version('dicom-anonymizer')}; {RULES}"
    ds.DeidentificationMethod = method[:64]  # LO: 64 characters at most
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [code]


def _uids(ds, tags: set[tuple[int, int]] | None = None) -> set[str]:
    """The UID values in ``ds`` (of ``tags`` only, when given), nested sequences included."""
    found: set[str] = set()

    def collect(dataset, element):
        wanted = tags is None or (element.tag.group, element.tag.element) in tags
        if element.VR == "UI" and element.value and wanted:
            found.update(str(v) for v in (element.value if element.VM > 1 else [element.value]))

    ds.walk(collect)
    return found


def _replace_nested_uids(ds, uid_tags: set[tuple[int, int]], new_uid) -> None:
    """The profile's UID replacement (``new_uid``: the library's consistent old -> new map) inside
    sequences too, which the library leaves alone: a SEG's references to its images, for one."""

    def replace(dataset, element):
        tag = (element.tag.group, element.tag.element)
        if element.VR == "UI" and element.VM == 1 and tag in uid_tags and element.value:
            element.value = new_uid(str(element.value))

    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                item.walk(replace)


def _residual_hits(folder: Path, secrets: set[str], old_uids: set[str]) -> int:
    """How many (file, value) pairs of ``secrets`` still occur in the output files' bytes, plus
    how many input UIDs are still values of the output files."""
    import pydicom

    needles = [s.encode("utf-8", "ignore") for s in secrets]
    hits = 0
    for f in folder.rglob("*.dcm"):
        data = f.read_bytes()
        hits += sum(1 for n in needles if n and n in data)
        ds = pydicom.dcmread(f)
        meta = getattr(ds, "file_meta", None)
        hits += len((_uids(ds) | (_uids(meta) if meta is not None else set())) & old_uids)
    return hits


def _report(
    n_files: int, n_series: int, changes: dict[str, Counter], private: int, burned: int
) -> dict:
    return {
        "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
        "library": f"dicom-anonymizer {version('dicom-anonymizer')}",
        "rules": RULES,
        "files": n_files,
        "series": n_series,
        "private_elements_removed": private,
        "burned_in_annotation_files": burned,
        "changes": {k: dict(sorted(v.items())) for k, v in sorted(changes.items())},
    }


def _move_into(partial: Path, out_dir: Path) -> None:
    for child in partial.iterdir():
        child.rename(out_dir / child.name)
