"""DICOM series folders: several series, unsorted slices, rescale, oblique and flipped geometry;
checked against the analytic truth and SimpleITK's own series reader."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medfoundry.io import VolumeReadError, read_image
from medfoundry.io.dicom import list_series
from tests.io.synthetic_dicom import write_series

OBLIQUE = (0.9659258, 0.2588190, 0.0, -0.2588190, 0.9659258, 0.0)  # 15 degrees about z
TILTED = (1.0, 0.0, 0.0, 0.0, 0.8660254, -0.5)  # 30 degrees about x (a gantry tilt)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # rows run right to left, columns back to front


def _stored(shape=(7, 12, 10), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-200, 1500, size=shape).astype(np.int16)


def _sitk_reference(folder, uid):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    img = reader.Execute()
    d = np.array(img.GetDirection()).reshape(3, 3)[:, ::-1]
    return sitk.GetArrayFromImage(img), np.array(img.GetOrigin()), d, img.GetSpacing()[::-1]


@pytest.mark.parametrize("orientation", [OBLIQUE, TILTED, FLIPPED])
def test_an_unsorted_oblique_series_reads_with_the_true_geometry_and_hu(tmp_path, orientation):
    truth = write_series(tmp_path, _stored(), orientation=orientation, slope=2.0, intercept=-1000)
    vol = read_image(tmp_path)
    assert vol.array.shape == (1, 7, 12, 10)
    np.testing.assert_allclose(vol.array[0], truth["values"])  # rescaled, slices in true order
    np.testing.assert_allclose(vol.origin_mm, truth["origin_mm"], atol=1e-4)
    np.testing.assert_allclose(vol.direction, truth["direction"], atol=1e-5)
    np.testing.assert_allclose(vol.spacing_mm, truth["spacing_mm"], atol=1e-4)
    ref, origin, direction, spacing = _sitk_reference(tmp_path, truth["uid"])
    np.testing.assert_allclose(vol.array[0], ref)
    np.testing.assert_allclose(vol.origin_mm, origin, atol=1e-4)
    np.testing.assert_allclose(vol.direction, direction, atol=1e-5)
    np.testing.assert_allclose(vol.spacing_mm, spacing, atol=1e-4)
    assert vol.meta["modality"] == "CT" and len(vol.meta["dicom"]["files"]) == 7


def test_slices_stored_head_first_come_out_in_increasing_position(tmp_path):
    stored = _stored((5, 6, 6))
    # Positions decrease along the normal: slice k of the files lies below slice k-1.
    truth = write_series(tmp_path, stored[::-1], spacing_zyx=(-3.0, 1.0, 1.0), shuffle_seed=3)
    vol = read_image(tmp_path)
    np.testing.assert_allclose(vol.array[0], truth["values"][::-1])
    np.testing.assert_allclose(vol.spacing_mm, [3.0, 1.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(vol.origin_mm, truth["origin_mm"] + [0, 0, -12.0], atol=1e-4)


def test_a_folder_of_several_series_lists_them_and_takes_a_choice(tmp_path):
    write_series(tmp_path / "a", _stored(seed=1), number=2, description="T1 axial", modality="MR")
    truth = write_series(tmp_path / "b", _stored(seed=2), number=5, description="CT soft")
    (tmp_path / "notes.txt").write_text("not dicom")
    series = list_series(tmp_path)
    assert [(s.number, s.modality, len(s.files)) for s in series] == [(2, "MR", 7), (5, "CT", 7)]
    with pytest.raises(VolumeReadError, match="2 DICOM image series.*T1 axial.*CT soft"):
        read_image(tmp_path)
    for choice in ("5", truth["uid"], "ct SOFT"):
        vol = read_image(f"{tmp_path}::{choice}")
        np.testing.assert_allclose(vol.array[0], truth["values"])
    with pytest.raises(VolumeReadError, match="no series match '9'"):
        read_image(f"{tmp_path}::9")


def test_the_sample_ct_series_reads_like_simpleitk_and_skips_its_seg(data_dir, tmp_path):
    sample = data_dir / "dicom_ct_seg_sample"
    vol = read_image(sample)  # ct/ and seg/ together: the SEG is not an image series
    assert vol.array.shape == (1, 3, 512, 512)
    uid = list_series(sample)[0].uid
    ref, origin, direction, spacing = _sitk_reference(sample / "ct", uid)
    np.testing.assert_array_equal(vol.array[0], ref)
    np.testing.assert_allclose(vol.origin_mm, origin, atol=1e-4)
    np.testing.assert_allclose(vol.direction, direction, atol=1e-6)
    np.testing.assert_allclose(vol.spacing_mm, [1.0, 0.810547, 0.810547], atol=1e-5)
    assert vol.array.min() == -3024 and vol.array.max() == 1381  # HU (SOURCE.txt)
