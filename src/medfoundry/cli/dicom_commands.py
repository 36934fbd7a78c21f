"""``medfoundry dicom ls`` (the image series of a folder) and ``medfoundry deid`` (DICOM
de-identification by the PS3.15 basic profile)."""

from __future__ import annotations

import json
from pathlib import Path

from medfoundry import MedfoundryError


def add_dicom(sub, common) -> None:
    p = sub.add_parser(
        "dicom",
        parents=[common],
        help="DICOM folders: list their image series",
        description="A folder with several series is read as FOLDER::SERIES wherever an image "
        "path is accepted (SERIES: the series number, UID or description).",
    )
    dsub = p.add_subparsers(dest="dicom_command", metavar="COMMAND", required=True)
    ls = dsub.add_parser(
        "ls",
        parents=[common],
        help="list the image series of a folder (subfolders included)",
        description="One line per image series: number, modality, slices, description, UID. "
        "SEG, SR, presentation states and non-DICOM files are left out.",
    )
    ls.add_argument("folder", type=Path, metavar="FOLDER")
    ls.add_argument("--json", action="store_true", help="print JSON instead of lines")
    ls.set_defaults(func=_ls)
    _add_deid(sub, common)


def _ls(a) -> None:
    from medfoundry.io.dicom import list_series

    if not a.folder.is_dir():
        raise MedfoundryError(f"{a.folder}: not a folder")
    series = list_series(a.folder)
    if not series:
        raise MedfoundryError(f"{a.folder}: no DICOM image series found")
    if a.json:
        rows = [
            {
                "number": s.number,
                "modality": s.modality,
                "slices": len(s.files),
                "description": s.description,
                "uid": s.uid,
            }
            for s in series
        ]
        print(json.dumps(rows, indent=2))
        return
    for s in series:
        print(s.line())


def _add_deid(sub, common) -> None:
    p = sub.add_parser(
        "deid",
        parents=[common],
        help="de-identify DICOM files (PS3.15 basic profile) with a report of what changed",
        description="Applies the DICOM PS3.15 Annex E Basic Application Level Confidentiality "
        "Profile (dicom-anonymizer's table for the 2026c standard) to every DICOM file under IN, "
        "writing OUT/series_<k>/<n>.dcm and OUT/deid_report.json (per attribute: how many files "
        "had it removed, emptied or replaced; no values, no input file names). UIDs are replaced "
        "consistently, so series and SEG references stay intact; private elements are removed. "
        "The output is then searched for the input's names, IDs, birth dates, accession numbers "
        "and UIDs: any hit is an error and OUT is not written. Pixel data is not changed "
        "(files flagged BurnedInAnnotation are counted in the report).",
    )
    p.add_argument("input", type=Path, metavar="IN", help="a DICOM file or folder")
    p.add_argument("out", type=Path, metavar="OUT", help="a new (or empty) folder outside IN")
    p.set_defaults(func=_deid)


def _deid(a) -> None:
    from medfoundry.io.deid import deidentify

    r = deidentify(a.input, a.out, progress=not a.quiet)
    print(
        f"de-identified {r['files']} file(s) in {r['series']} series; "
        f"{len(r['changes'])} attribute(s) changed -> {a.out} (report: deid_report.json)"
    )
