"""Readers and writers: axis contract, geometry round trips, scale factors, channels, bad files."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medfoundry.io import Volume, VolumeReadError, read_image, read_label, read_volume, write_volume


def _volume(shape=(5, 6, 7), spacing=(3.0, 0.8, 0.7)) -> Volume:
    rng = np.random.default_rng(0)
    direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    theta = 0.3  # an oblique acquisition: rotate the in-plane axes
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    return Volume(
        rng.normal(size=(1, *shape)).astype(np.float32),
        spacing,
        (10.0, -20.0, 30.5),
        rot @ direction,
    )


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_write_read_round_trip_keeps_voxels_and_geometry(tmp_path, suffix):
    vol = _volume()
    back = read_volume(write_volume(vol, tmp_path / f"v{suffix}"))
    assert back.shape_zyx == (5, 6, 7)
    assert back.same_geometry(vol, tol=1e-5)
    np.testing.assert_array_equal(back.array, vol.array)


def test_axis_contract_matches_simpleitk(tmp_path):
    """(Z, Y, X) arrays, spacing and origin agree with SimpleITK's reading of the same NIfTI."""
    vol = _volume()
    path = write_volume(vol, tmp_path / "v.nii.gz")
    img = sitk.ReadImage(str(path))
    ours = read_volume(path)
    np.testing.assert_array_equal(ours.array[0], sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(ours.spacing_mm, img.GetSpacing()[::-1], atol=1e-6)
    np.testing.assert_allclose(ours.origin_mm, img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(
        ours.direction, np.array(img.GetDirection()).reshape(3, 3)[:, ::-1], atol=1e-6
    )


def test_nifti_rewrite_keeps_source_header_exactly(tmp_path, acdc_dir):
    src = acdc_dir / "labels" / "patient002_frame01.nii.gz"
    out = write_volume(read_label(src), tmp_path / "copy.nii.gz")
    a, b = nib.load(src), nib.load(out)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert (
        a.header["sform_code"] == b.header["sform_code"]
        and a.header["qform_code"] == b.header["qform_code"]
    )
    np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))


def test_acdc_scale_factor_is_applied(acdc_dir):
    path = acdc_dir / "images" / "patient002_frame01.nii.gz"
    raw = nib.load(path)
    assert raw.get_data_dtype() == np.int16 and raw.dataobj.slope != 1.0  # relies on scl_slope
    vol = read_image(path)
    assert vol.array.dtype == np.float32 and vol.shape_zyx == raw.shape[::-1]
    assert vol.array.min() >= 0.0 and abs(vol.array.max() - 1.0) < 1e-4  # [0, 1] after scaling


def test_hippocampus_image_geometry(hippo_dir):
    vol = read_image(hippo_dir / "imagesTr" / "hippocampus_001.nii.gz")
    assert vol.shape_zyx == nib.load(hippo_dir / "imagesTr" / "hippocampus_001.nii.gz").shape[::-1]
    np.testing.assert_allclose(vol.spacing_mm, [1.0, 1.0, 1.0])


def test_channels_from_separate_files_and_4d_nifti(tmp_path):
    a, b = _volume(), _volume()
    b.array = b.array * 2 + 1
    pa, pb = (
        write_volume(a, tmp_path / "c_0000.nii.gz"),
        write_volume(b, tmp_path / "c_0001.nii.gz"),
    )
    two = read_image([pa, pb])
    assert two.array.shape == (2, 5, 6, 7)
    np.testing.assert_allclose(two.array[1], b.array[0])
    four_d = read_image(write_volume(two, tmp_path / "c4d.nii.gz"))
    np.testing.assert_array_equal(four_d.array, two.array)


def test_channel_geometry_mismatch_is_an_error(tmp_path):
    a, b = _volume(), _volume(spacing=(3.0, 0.8, 0.9))
    pa, pb = (
        write_volume(a, tmp_path / "c_0000.nii.gz"),
        write_volume(b, tmp_path / "c_0001.nii.gz"),
    )
    with pytest.raises(VolumeReadError, match="c_0001.nii.gz: channel geometry"):
        read_image([pa, pb])


def test_dicom_series_folder(tmp_path):
    vol = _volume(shape=(4, 8, 9), spacing=(2.5, 0.9, 0.9))
    arr = (vol.array[0] * 100).astype(np.int16)
    folder = tmp_path / "series"
    folder.mkdir()
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([0.9, 0.9, 2.5])
    img.SetOrigin([1.0, 2.0, 3.0])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(arr.shape[0]):
        sl = img[:, :, z]
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")  # one series
        sl.SetMetaData(
            "0020|0032", "\\".join(str(v) for v in img.TransformIndexToPhysicalPoint((0, 0, z)))
        )
        sl.SetMetaData("0020|0013", str(z))
        sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        writer.SetFileName(str(folder / f"{z:03d}.dcm"))
        writer.Execute(sl)
    back = read_volume(folder)
    assert back.shape_zyx == (4, 8, 9)
    np.testing.assert_array_equal(back.array[0], arr)
    np.testing.assert_allclose(back.spacing_mm, [2.5, 0.9, 0.9], atol=1e-4)


def _corrupt(tmp_path, hippo_dir, kind):
    src = (hippo_dir / "imagesTr" / "hippocampus_001.nii.gz").read_bytes()
    path = tmp_path / f"{kind}.nii.gz"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(src[: len(src) // 2])
    elif kind == "garbage":
        path.write_bytes(gzip.compress(b"this is not a nifti file" * 20))
    elif kind == "bad_gzip":
        path.write_bytes(src[:20] + b"\x00" * 200 + src[220:])
    return path


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("empty", "empty"),
        ("truncated", "truncated"),
        ("garbage", "unreadable|corrupt"),
        ("bad_gzip", "corrupt|unreadable"),
    ],
)
def test_bad_files_give_an_error_naming_file_and_reason(tmp_path, hippo_dir, kind, reason):
    path = _corrupt(tmp_path, hippo_dir, kind)
    with pytest.raises(VolumeReadError, match=reason) as err:
        read_volume(path)
    assert str(path) in str(err.value)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(VolumeReadError, match="not found"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(VolumeReadError, match="unsupported file type"):
        read_volume(tmp_path / "x.png")


def test_label_reader_rejects_non_integer_maps(tmp_path):
    vol = _volume()
    with pytest.raises(VolumeReadError, match="non-integer"):
        read_label(write_volume(vol, tmp_path / "float_label.nii.gz"))
