"""Readers: NIfTI (nibabel), NRRD / MHA / MHD / single DICOM files (SimpleITK), DICOM series folders.

Every reader returns a :class:`~medfoundry.io.volume.Volume` in the ``(C, Z, Y, X)`` contract and raises
:class:`VolumeReadError` naming the file and the reason for anything unreadable (missing, empty, corrupt,
truncated, unsupported, not 3D, a voxel type that is not integer or real) and for nothing else.

What the libraries print while reading (nibabel's header fixes, ITK's C++ warnings, MetaIO's notes
on a short file) goes to this module's debug log, so a user sees our one-line error only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.io.volume import Volume

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
# RAS (NIfTI) <-> LPS (ITK): negate world x and y.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_VOXEL_KINDS = "biuf"  # bool, signed and unsigned integers, real floats (numpy dtype kinds)
_INT32 = np.iinfo(np.int32)
_STDERR_LOCK = threading.Lock()  # file descriptor 2 is process-wide: one redirection at a time


class VolumeReadError(MedfoundryError):
    """A file could not be read as a volume. ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def file_format(path: str | os.PathLike) -> str:
    """``"nifti"``, ``"itk"`` or ``"dicom_series"`` (a folder, or ``FOLDER::SERIES``) for a path,
    by suffix."""
    from medfoundry.io.dicom import split_selector

    p, choice = split_selector(path)
    if p.is_dir() or choice is not None:
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
    """Read one file (or a DICOM series folder, ``FOLDER::SERIES`` to pick one of several: see
    :mod:`medfoundry.io.dicom`) into a ``(C, Z, Y, X)`` volume.

    A 4D NIfTI ``(X, Y, Z, C)`` or a vector-valued NRRD/MHA gives ``C > 1``; NIfTI scale factors
    (``scl_slope``/``scl_inter``) are applied.
    """
    from medfoundry.io.dicom import split_selector

    p, choice = split_selector(path)
    if not p.exists():
        raise VolumeReadError(path, "file not found")
    fmt = file_format(p)
    if fmt != "dicom_series" and p.stat().st_size == 0:
        raise VolumeReadError(path, "file is empty (0 bytes)")
    try:
        with _library_output_to_log(p, itk=fmt != "nifti"):
            if fmt == "nifti":
                vol = _read_nifti(p)
            elif fmt == "itk":
                vol = _read_itk(p)
            else:
                vol = _read_dicom_series(p, choice)
    except VolumeReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every library failure becomes one named error
        raise VolumeReadError(path, _describe(exc)) from exc
    _check_voxels(path, vol.array)
    return vol


def read_image(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> Volume:
    """Read an image from one file or one file per channel (nnU-Net ``_0000``, ``_0001``...).

    Returns a ``(C, Z, Y, X)`` float32 volume; channel files must share one geometry.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise ValueError("read_image needs at least one file")
    vols = [read_volume(p) for p in paths]
    first = vols[0]
    for p, v in zip(paths[1:], vols[1:], strict=True):
        if not v.same_geometry(first):
            raise VolumeReadError(p, f"channel geometry {v.geometry()} differs from {paths[0]}")
    array = vols[0].array if len(vols) == 1 else np.concatenate([v.array for v in vols], axis=0)
    with np.errstate(over="ignore"):  # values beyond float32 become +-Inf, which validation reports
        return first.with_array(array.astype(np.float32, copy=False))


def read_label(path: str | os.PathLike) -> Volume:
    """Read a label map: a ``(1, Z, Y, X)`` integer volume (uint8 when all values fit, else int32).

    Non-integral, NaN/Inf or out-of-int32 values (a float map that is not a label map) are an error.
    """
    vol = read_volume(path)
    if vol.num_channels != 1:
        raise VolumeReadError(
            path, f"label map must have one channel, found {vol.num_channels} (a 4D file?)"
        )
    arr = vol.array
    if arr.dtype.kind == "f":
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise VolumeReadError(path, f"label map holds {bad} NaN/Inf voxels")
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise VolumeReadError(path, "label map holds non-integer values")
        arr = rounded
    lo, hi = (int(arr.min()), int(arr.max()))
    if lo < _INT32.min or hi > _INT32.max:
        raise VolumeReadError(path, f"label values [{lo}, {hi}] do not fit in 32-bit integers")
    dtype = np.uint8 if lo >= 0 and hi < 256 else np.int32
    return vol.with_array(arr.astype(dtype, copy=False))


def _check_voxels(path: str | os.PathLike, array: np.ndarray) -> None:
    """Refuse an empty array and a voxel type that is not bool, integer or real float."""
    if min(array.shape) == 0:
        raise VolumeReadError(path, f"volume has no voxels (shape {array.shape})")
    if array.dtype.kind not in _VOXEL_KINDS or array.dtype.fields is not None:
        raise VolumeReadError(
            path, f"voxel type {array.dtype} is not supported (expected integers or real floats)"
        )


@contextlib.contextmanager
def _library_output_to_log(path: Path, itk: bool) -> Iterator[None]:
    """Send what nibabel and SimpleITK (``itk``: it reads) print or warn while reading ``path`` to
    the debug log."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # numpy's casts of a damaged header, nibabel's notes
        try:
            with _nibabel_log_captured(notes), _native_stderr_captured(notes, itk):
                yield
        finally:
            notes += [f"{w.category.__name__}: {w.message}" for w in caught]
            for text in notes:
                if text.strip():
                    log.debug("%s: %s", path, " | ".join(text.strip().splitlines()))


@contextlib.contextmanager
def _nibabel_log_captured(notes: list[str]) -> Iterator[None]:
    """Append the messages nibabel's own logger would print (header fixes) to ``notes``."""
    from nibabel import imageglobals

    logger = imageglobals.logger
    handler = logging.Handler()
    handler.emit = lambda record: notes.append(record.getMessage())  # type: ignore[method-assign]
    saved = (logger.handlers[:], logger.propagate)
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], logger.propagate = saved


@contextlib.contextmanager
def _native_stderr_captured(notes: list[str], itk: bool) -> Iterator[None]:
    """Append what native code writes to file descriptor 2 (C++ ``std::cerr``: ITK warnings, MetaIO
    notes on a short file) to ``notes``; with ``itk``, SimpleITK's warning display is off meanwhile.
    File descriptor 2 is restored first on any exit (an interrupt included)."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        try:
            saved_fd = os.dup(2)
        except OSError:  # no stderr at all: nothing to protect
            saved_fd = None
        shown = None
        try:
            if saved_fd is not None:
                os.dup2(sink.fileno(), 2)
            shown = _itk_warnings(False) if itk else None
            yield
        finally:
            if saved_fd is not None:
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
            if shown is not None:
                _itk_warnings(shown)
            sink.seek(0)
            notes.append(sink.read().decode(errors="replace"))


def _itk_warnings(show: bool) -> bool:
    """Switch SimpleITK's global warning display; returns the previous setting."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject_GetGlobalWarningDisplay()
    sitk.ProcessObject_SetGlobalWarningDisplay(show)
    return shown


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    img = nib.load(str(path))
    if len(img.shape) not in (3, 4):
        raise VolumeReadError(
            path,
            f"expected a 3D or 4D (X, Y, Z, C) NIfTI, found {len(img.shape)}D shape {img.shape}",
        )
    if 0 in img.shape:
        raise VolumeReadError(path, f"volume has no voxels (shape {img.shape})")
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

    return from_sitk(sitk.ReadImage(str(path)), path)


def _read_dicom_series(folder: Path, choice: str | None) -> Volume:
    from medfoundry.io.dicom import DicomSeriesError, read_series

    try:
        return read_series(folder, choice)
    except DicomSeriesError as exc:
        raise VolumeReadError(folder, str(exc)) from exc


def from_sitk(img, path: Path) -> Volume:
    """A SimpleITK image (3D, scalar or vector-valued) of ``path`` as a ``(C, Z, Y, X)`` volume."""
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        raise VolumeReadError(
            path,
            f"expected a 3D image (several channels as vector components), found a "
            f"{img.GetDimension()}D image of size {tuple(img.GetSize())} (X first)",
        )
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
    if isinstance(exc, MemoryError):
        return (
            f"too large to read into memory ({kind}: {msg or 'the header declares a huge volume'})"
        )
    if (
        isinstance(exc, EOFError | OSError)
        or "zlib" in msg.lower()
        or "ended before" in msg.lower()
    ):
        return f"corrupt or truncated file ({kind}: {msg})"
    return f"unreadable ({kind}: {msg})"
