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


def _sitk_file(path, arr, vector=False):
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=vector), str(path))
    return path


@pytest.mark.parametrize(
    "name,make",
    [
        (
            "d2.nii.gz",
            lambda p: nib.save(nib.Nifti1Image(np.ones((4, 5), np.float32), np.eye(4)), p),
        ),
        (
            "d5.nii.gz",
            lambda p: nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 2, 2), np.float32), np.eye(4)), p),
        ),
        ("d2.mha", lambda p: _sitk_file(p, np.ones((4, 5), np.float32))),
        ("d4.mha", lambda p: _sitk_file(p, np.ones((2, 3, 4, 5), np.float32))),
        ("d4.nrrd", lambda p: _sitk_file(p, np.ones((2, 3, 4, 5), np.float32))),
    ],
)
def test_files_that_are_not_3d_are_refused_naming_the_file(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    for read in (read_volume, read_image, read_label):
        with pytest.raises(VolumeReadError) as err:
            read(path)
        assert str(err.value).startswith(f"{path}: expected a 3D"), str(err.value)
        assert "D" in err.value.reason and "ValueError" not in err.value.reason


def test_a_4d_label_map_names_the_file(tmp_path):
    path = _sitk_file(tmp_path / "vec.nrrd", np.ones((3, 4, 5, 2), np.uint8), vector=True)
    with pytest.raises(VolumeReadError, match="one channel, found 2") as err:
        read_label(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("complex", "voxel type complex64 is not supported"),
        ("rgb", "is not supported"),
        ("label_inf", "NaN/Inf"),
        ("label_nan", "NaN/Inf"),
        ("label_huge", "do not fit in 32-bit integers"),
        ("zero_size", "no voxels"),
    ],
)
def test_odd_voxel_data_is_a_volume_read_error(tmp_path, kind, reason):
    lab = np.zeros((4, 5, 6), np.float32)
    lab[1, 2, 3] = {"label_inf": np.inf, "label_nan": np.nan, "label_huge": 1e20}.get(kind, 1)
    arr = {
        "complex": lab.astype(np.complex64),
        "rgb": np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]),
        "zero_size": np.zeros((0, 5, 6), np.float32),
    }.get(kind, lab)
    path = tmp_path / f"{kind}.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
    with pytest.raises(VolumeReadError, match=reason) as err:
        read_label(path)
    assert err.value.path == str(path)


def test_what_the_libraries_print_while_reading_is_not_shown(tmp_path, hippo_dir, capfd, caplog):
    """MetaIO's notes on a short .mha and nibabel's header fixes go to the debug log only."""
    src = hippo_dir / "imagesTr" / "hippocampus_001.nii.gz"
    mha = tmp_path / "short.mha"
    sitk.WriteImage(sitk.ReadImage(str(src)), str(mha), useCompression=False)
    data = mha.read_bytes()
    mha.write_bytes(data[: len(data) // 2])
    raw = bytearray(gzip.decompress(src.read_bytes()))
    raw[252:254] = np.int16(77).tobytes()  # qform_code 77: nibabel "fixes" it and says so
    odd = tmp_path / "odd_qform.nii"
    odd.write_bytes(bytes(raw))
    capfd.readouterr()
    with caplog.at_level("DEBUG", logger="medfoundry.io"):
        with pytest.raises(VolumeReadError, match="short.mha"):
            read_volume(mha)
        assert read_volume(odd).shape_zyx == (35, 51, 35)
    out = capfd.readouterr()
    assert out.err == "" and out.out == ""
    debug = "\n".join(r.getMessage() for r in caplog.records)
    assert "data not read completely" in debug and "qform_code 77" in debug
