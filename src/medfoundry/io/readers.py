"""Readers: NIfTI (nibabel), NRRD / MHA / MHD / single DICOM files (SimpleITK), DICOM series folders.

Every reader returns a :class:`~medfoundry.io.volume.Volume` in the ``(C, Z, Y, X)`` contract and raises
:class:`VolumeReadError` naming the file and the reason for anything unreadable (missing, empty, corrupt,
truncated, unsupported).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.io.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
# RAS (NIfTI) <-> LPS (ITK): negate world x and y.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


class VolumeReadError(MedfoundryError):
    """A file could not be read as a volume. ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def file_format(path: str | os.PathLike) -> str:
    """``"nifti"``, ``"itk"`` or ``"dicom_series"`` (a folder) for a path, by suffix."""
    p = Path(path)
    if p.is_dir():
        return "dicom_series"
    name = p.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(ITK_SUFFIXES):
        return "itk"
    raise VolumeReadError(
        path,
        f"unsupported file type (expected one of {NIFTI_SUFFIXES + ITK_SUFFIXES} or a DICOM folder)",
    )


def read_volume(path: str | os.PathLike) -> Volume:
    """Read one file (or a DICOM series folder) into a ``(C, Z, Y, X)`` volume.

    A 4D NIfTI ``(X, Y, Z, C)`` or a vector-valued NRRD/MHA gives ``C > 1``; NIfTI scale factors
    (``scl_slope``/``scl_inter``) are applied.
    """
    p = Path(path)
    if not p.exists():
        raise VolumeReadError(path, "file not found")
    fmt = file_format(p)
    if fmt != "dicom_series" and p.stat().st_size == 0:
        raise VolumeReadError(path, "file is empty (0 bytes)")
    try:
        if fmt == "nifti":
            vol = _read_nifti(p)
        elif fmt == "itk":
            vol = _read_itk(p)
        else:
            vol = _read_dicom_series(p)
    except VolumeReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every library failure becomes one named error
        raise VolumeReadError(path, _describe(exc)) from exc
    if min(vol.array.shape) == 0:
        raise VolumeReadError(path, f"volume has no voxels (shape {vol.array.shape})")
    return vol


def read_image(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> Volume:
    """Read an image from one file or one file per channel (nnU-Net ``_0000``, ``_0001``...).

    Returns a ``(C, Z, Y, X)`` float32 volume; channel files must share one geometry.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    vols = [read_volume(p) for p in paths]
    first = vols[0]
    for p, v in zip(paths[1:], vols[1:], strict=True):
        if not v.same_geometry(first):
            raise VolumeReadError(p, f"channel geometry {v.geometry()} differs from {paths[0]}")
    array = vols[0].array if len(vols) == 1 else np.concatenate([v.array for v in vols], axis=0)
    return first.with_array(array.astype(np.float32, copy=False))


def read_label(path: str | os.PathLike) -> Volume:
    """Read a label map: a ``(1, Z, Y, X)`` integer volume (uint8 when all values fit, else int32).

    Non-integral values (a float map that is not a label map) are an error.
    """
    vol = read_volume(path)
    if vol.num_channels != 1:
        raise VolumeReadError(path, f"label map must have one channel, found {vol.num_channels}")
    arr = vol.array
    if not np.issubdtype(arr.dtype, np.integer):
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise VolumeReadError(path, "label map holds non-integer values")
        arr = rounded
    lo, hi = (int(arr.min()), int(arr.max()))
    dtype = np.uint8 if lo >= 0 and hi < 256 else np.int32
    return vol.with_array(arr.astype(dtype, copy=False))


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    img = nib.load(str(path))
    if len(img.shape) not in (3, 4):
        raise VolumeReadError(path, f"expected a 3D or 4D NIfTI, found shape {img.shape}")
    data = np.asanyarray(img.dataobj)  # applies scl_slope / scl_inter
    if data.ndim == 3:
        data = data[..., None]
    array = data.transpose(3, 2, 1, 0)  # (X, Y, Z, C) -> (C, Z, Y, X); C-contiguous for NIfTI order
    affine_lps = _RAS_TO_LPS @ img.affine[:3, :]
    cols_xyz = affine_lps[:, :3]  # columns: world step per voxel along i (X), j (Y), k (Z)
    spacing_xyz = np.linalg.norm(cols_xyz, axis=0)
    if np.any(spacing_xyz == 0):
        raise VolumeReadError(path, "affine has a zero-length voxel axis")
    direction = (cols_xyz / spacing_xyz)[:, ::-1]
    meta = {"nifti_header": img.header.copy(), "nifti_affine": img.affine.copy()}
    return Volume(array, spacing_xyz[::-1], affine_lps[:, 3], direction, meta)


def _read_itk(path: Path) -> Volume:
    import SimpleITK as sitk

    return _from_sitk(sitk.ReadImage(str(path)))


def _read_dicom_series(folder: Path) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeReadError(folder, "folder holds no DICOM series")
    if len(series) > 1:
        raise VolumeReadError(
            folder,
            f"folder holds {len(series)} DICOM series ({', '.join(series)}); give one series per folder",
        )
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return _from_sitk(reader.Execute())


def _from_sitk(img) -> Volume:
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, found {img.GetDimension()}D")
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X) or (Z, Y, X, C)
    array = arr[None] if arr.ndim == 3 else np.moveaxis(arr, -1, 0)
    d = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)  # columns: x, y, z axes
    return Volume(array, img.GetSpacing()[::-1], img.GetOrigin(), d[:, ::-1])


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    msg = text[-1] if text else ""
    for line in text:  # SimpleITK puts the useful sentence in the middle of a long report
        if "Description:" in line or "Unable to" in line or "ERROR" in line:
            msg = line.split("Description:")[-1].strip()
            break
    kind = type(exc).__name__
    if (
        isinstance(exc, EOFError | OSError)
        or "zlib" in msg.lower()
        or "ended before" in msg.lower()
    ):
        return f"corrupt or truncated file ({kind}: {msg})"
    return f"unreadable ({kind}: {msg})"
