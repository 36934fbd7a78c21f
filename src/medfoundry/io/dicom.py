"""DICOM series folders: list the image series of a folder (subfolders included), pick one, read it.

A folder may hold several series, files of other kinds (SEG, SR, presentation states, non-DICOM
files) and slices in any file order. :func:`list_series` groups the image files by
SeriesInstanceUID (pydicom, headers only) and sorts each series' slices along the slice normal
(ImageOrientationPatient x ImagePositionPatient), so file names and InstanceNumber never decide the
order. :func:`read_series` hands the sorted files to SimpleITK's GDCM reader, which applies the
rescale slope/intercept and builds the (oblique, flipped) geometry; the result is a ``Volume``
whose slice axis (Z) follows the sorted files: ``array[:, k]`` is ``series.files[k]``.

A series is picked with the path syntax ``FOLDER::SERIES`` everywhere an image path is accepted,
SERIES being the SeriesNumber, the SeriesInstanceUID or the SeriesDescription (case-insensitive).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from medfoundry.io.volume import Volume

SELECTOR = "::"
# Series of these modalities hold no image volume (segmentations, reports, states, plans, ...).
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "SR", "PR", "KO", "REG", "RTSTRUCT", "RTPLAN", "RTRECORD", "DOC", "FID", "AU", "ECG"}
)
_HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "InstanceNumber",
    "NumberOfFrames",
    "Rows",
]


def require(module: str, extra: str = "dicom"):
    """Import ``module`` of an optional extra, or a one-line error saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        from medfoundry import MedfoundryError

        raise MedfoundryError(
            f"this needs the '{module}' package: pip install 'medfoundry[{extra}]'"
        ) from exc


class DicomSeriesError(ValueError):
    """A DICOM folder holds no usable series, several without a choice, or an unknown choice."""


@dataclasses.dataclass
class DicomSeries:
    """One image series of a folder. ``files`` are sorted along the slice normal (increasing)."""

    uid: str
    number: int | None
    modality: str
    description: str
    files: list[Path]

    def line(self) -> str:
        """One line for listings: number, modality, slices, description, UID."""
        num = "-" if self.number is None else str(self.number)
        desc = self.description or "(no description)"
        return (
            f"{num:>4}  {self.modality or '?':<3} {len(self.files):>4} slices  {desc}  [{self.uid}]"
        )


def split_selector(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``("FOLDER", "SERIES")`` for ``FOLDER::SERIES``; ``(path, None)`` otherwise."""
    text = os.fspath(path)
    if SELECTOR in text:
        folder, _, choice = text.rpartition(SELECTOR)
        return Path(folder), choice.strip() or None
    return Path(text), None


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file, or one with the DICOM preamble (``DICM`` at byte 128)."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def list_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """The image series under ``folder`` (recursively), by SeriesNumber then UID. Files that are
    not DICOM, non-image series (:data:`NON_IMAGE_MODALITIES`) and files without the plane
    geometry (ImagePositionPatient/ImageOrientationPatient) are left out."""
    import pydicom

    groups: dict[str, list[tuple[Path, object]]] = {}
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.name.startswith(".") or not is_dicom_file(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception:  # noqa: BLE001 - not DICOM after all: left out like any other file
            continue
        if str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
            continue
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    series = [_series(uid, members) for uid, members in groups.items()]
    return sorted(series, key=lambda s: (s.number is None, s.number or 0, s.uid))


def _series(uid: str, members: list[tuple[Path, object]]) -> DicomSeries:
    """A series with its files sorted along the slice normal (InstanceNumber breaks ties)."""
    first = members[0][1]
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])

    def key(member):
        path, ds = member
        position = float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient]))
        return (round(position, 4), int(ds.get("InstanceNumber", 0) or 0), path.name)

    members = sorted(members, key=key)
    number = first.get("SeriesNumber")
    return DicomSeries(
        uid=uid,
        number=None if number in (None, "") else int(number),
        modality=str(first.get("Modality", "")),
        description=str(first.get("SeriesDescription", "")),
        files=[p for p, _ in members],
    )


def choose_series(folder: str | os.PathLike, choice: str | None = None) -> DicomSeries:
    """The series of ``folder`` that ``choice`` names (number, UID or description); without a
    choice, the only one. Raises :class:`DicomSeriesError` listing the series otherwise."""
    series = list_series(folder)
    if not series:
        raise DicomSeriesError("folder holds no DICOM image series")
    if choice is None:
        if len(series) == 1:
            return series[0]
        raise DicomSeriesError(
            f"folder holds {len(series)} DICOM image series; pick one as FOLDER{SELECTOR}SERIES "
            f"(number, UID or description): " + "; ".join(s.line() for s in series)
        )
    found = [s for s in series if _names(s, choice)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise DicomSeriesError(
            f"{what} series match {choice!r}; the folder holds: "
            + "; ".join(s.line() for s in series)
        )
    return found[0]


def _names(series: DicomSeries, choice: str) -> bool:
    c = choice.strip()
    return (
        c == series.uid
        or (series.number is not None and c == str(series.number))
        or (bool(series.description) and c.lower() == series.description.lower())
    )


def read_series(folder: str | os.PathLike, choice: str | None = None) -> Volume:
    """Read one series of ``folder`` into a ``(1, Z, Y, X)`` volume (values after the rescale
    slope/intercept: HU on CT). ``meta["dicom"]`` holds the sorted files (``files[k]`` is slice
    ``k``), the series UID, modality and description; ``meta["modality"]`` the modality."""
    import SimpleITK as sitk

    from medfoundry.io.readers import from_sitk

    series = choose_series(folder, choice)
    frames = _frame_count(series.files[0])
    if frames > 1:
        raise DicomSeriesError(
            f"series {series.uid} is a multi-frame (enhanced) object of {frames} frames; "
            "convert it to single-frame images (e.g. with dcm2niix) first"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    vol = from_sitk(reader.Execute(), Path(folder))
    vol.meta["modality"] = series.modality
    vol.meta["dicom"] = {
        "files": [str(f) for f in series.files],
        "series_uid": series.uid,
        "modality": series.modality,
        "description": series.description,
    }
    return vol


def _frame_count(path: Path) -> int:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
    return int(ds.get("NumberOfFrames", 1) or 1)
