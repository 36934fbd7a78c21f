"""Writers: the inverse of :mod:`medfoundry.io.readers`, atomic (temporary file, then rename)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medfoundry.io.readers import _RAS_TO_LPS, file_format
from medfoundry.io.volume import Volume
from medfoundry.utils.atomic import atomic_path


def write_volume(vol: Volume, path: str | os.PathLike) -> Path:
    """Write ``vol`` (``(C, Z, Y, X)``) to ``path``; the format follows the suffix.

    A volume read from NIfTI and written to NIfTI keeps the source header (qform/sform codes, units,
    description) and affine, so the written geometry matches the source exactly. The file appears
    only once complete.
    """
    path = Path(path)
    fmt = file_format(path)
    with atomic_path(path) as tmp:  # same suffix: the library picks the format
        if fmt == "nifti":
            _write_nifti(vol, tmp)
        else:
            _write_itk(vol, tmp)
    return path


def affine_ras(vol: Volume) -> np.ndarray:
    """The 4x4 NIfTI (RAS, voxel (i, j, k) = (X, Y, Z)) affine for a volume's geometry."""
    cols_xyz = (vol.direction * vol.spacing_mm)[:, ::-1]  # world step per voxel along X, Y, Z
    lps = np.eye(4)
    lps[:3, :3] = cols_xyz
    lps[:3, 3] = vol.origin_mm
    ras = lps.copy()
    ras[:3, :] = _RAS_TO_LPS @ lps[:3, :]
    return ras


def _write_nifti(vol: Volume, path: Path) -> None:
    import nibabel as nib

    data = vol.array.transpose(3, 2, 1, 0)  # (C, Z, Y, X) -> (X, Y, Z, C)
    if data.shape[3] == 1:
        data = data[..., 0]
    header = vol.meta.get("nifti_header")
    affine = vol.meta.get("nifti_affine")
    if affine is None or not np.allclose(affine, affine_ras(vol), atol=1e-4):
        affine, header = (
            affine_ras(vol),
            None,
        )  # geometry changed: the source header no longer applies
    if header is not None:
        header = header.copy()
        header.set_data_dtype(data.dtype)
        header.set_slope_inter(None, None)
    img = nib.Nifti1Image(data, affine, header)
    if header is None:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    img.set_data_dtype(data.dtype)
    nib.save(img, str(path))


def _write_itk(vol: Volume, path: Path) -> None:
    import SimpleITK as sitk

    arr = vol.array[0] if vol.num_channels == 1 else np.moveaxis(vol.array, 0, -1)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=vol.num_channels > 1)
    img.SetSpacing([float(v) for v in vol.spacing_mm[::-1]])
    img.SetOrigin([float(v) for v in vol.origin_mm])
    img.SetDirection([float(v) for v in vol.direction[:, ::-1].ravel()])
    sitk.WriteImage(img, str(path), useCompression=True)
