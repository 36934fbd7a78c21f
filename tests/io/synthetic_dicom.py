"""Synthetic DICOM series for tests: any orientation, spacing, rescale and file order (pydicom)."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-4711", "PatientBirthDate": "19600101"}


def write_series(
    folder: Path,
    stored: np.ndarray,
    spacing_zyx=(2.5, 0.8, 0.7),
    first_position=(-120.0, 80.0, 40.0),
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    number: int = 3,
    description: str = "Axial",
    shuffle_seed: int | None = 0,
    study_uid: str | None = None,
) -> dict:
    """Write ``stored`` ``(Z, Y, X)`` int16 as one file per slice into ``folder``; slice ``k`` lies at
    ``first_position + k * spacing_z * (row x col)``. Files get random names (``shuffle_seed``) and
    InstanceNumbers counting backwards, so neither decides the order. Returns the series' truth:
    origin (LPS mm, slice 0), direction (columns Z, Y, X), spacing, values (after rescale), uid."""
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    series_uid, frame_uid = generate_uid(), generate_uid()
    study_uid = study_uid or generate_uid()
    nz = stored.shape[0]
    names = (
        np.random.default_rng(shuffle_seed).permutation(nz) if shuffle_seed is not None else None
    )
    for k in range(nz):
        pos = np.asarray(first_position, float) + k * spacing_zyx[0] * normal
        ds = _slice(stored[k], modality, pos, orientation, spacing_zyx, slope, intercept)
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series_uid, frame_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = number, description, nz - k
        name = f"IM{names[k] if names is not None else k:04d}"
        ds.save_as(folder / name, enforce_file_format=True)
    direction = np.stack([normal, col, row], axis=1)
    return {
        "origin_mm": np.asarray(first_position, float),
        "direction": direction,
        "spacing_mm": np.asarray(spacing_zyx, float),
        "values": stored.astype(np.float64) * slope + intercept,
        "uid": series_uid,
        "study_uid": study_uid,
    }


def _slice(pixels, modality, pos, orientation, spacing_zyx, slope, intercept) -> FileDataset:
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    ds.PatientSex, ds.StudyDate = "F", datetime.date(2024, 1, 2).strftime("%Y%m%d")
    ds.StudyTime, ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = (
        "120000",
        "A1",
        "1",
        "",
    )
    ds.Modality, ds.Manufacturer = modality, "synthetic"
    ds.ImagePositionPatient = [float(v) for v in pos]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(spacing_zyx[1]), float(spacing_zyx[2])]  # row spacing (Y), column (X)
    ds.SliceThickness = abs(float(spacing_zyx[0]))
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16)).tobytes()
    return ds
