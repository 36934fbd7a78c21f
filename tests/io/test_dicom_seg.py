"""DICOM SEG: the real sample SEG reads onto its CT; written SEGs read back voxel for voxel."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medfoundry.io import read_image
from medfoundry.io.dicom_seg import (
    PRIVATE_SCHEME,
    DicomSegError,
    read_dicom_seg,
    structure_codes,
    write_dicom_seg,
)
from tests.io.synthetic_dicom import write_series

TILTED = (1.0, 0.0, 0.0, 0.0, 0.8660254, -0.5)


def test_the_sample_seg_reads_onto_its_ct_with_the_documented_liver(data_dir):
    sample = data_dir / "dicom_ct_seg_sample"
    labels, names = read_dicom_seg(sample / "seg" / "liver.dcm", sample / "ct")
    assert names == {1: "Liver"}
    # SOURCE.txt: liver pixels 36233 / 35645 / 35220 in frames 1-3 = 03, 02, 01.dcm; slice 0 is
    # the lowest z (03.dcm, z = -128.69).
    assert (labels.array[0] == 1).sum(axis=(1, 2)).tolist() == [36233, 35645, 35220]
    ct = read_image(sample / "ct")
    assert np.median(ct.array[0][labels.array[0] == 1]) == 45  # HU, as SOURCE.txt


def test_a_written_seg_reads_back_voxel_for_voxel_with_codes(data_dir, tmp_path):
    sample = data_dir / "dicom_ct_seg_sample"
    liver, _ = read_dicom_seg(sample / "seg" / "liver.dcm", sample / "ct")
    labels = liver.array.astype(np.uint8) * 2  # class 2: liver
    labels[0, 1, 100:140, 300:330] = 5  # class 5: a made-up structure without a code
    names = {0: "background", 2: "liver", 3: "left kidney", 5: "my region"}
    out = write_dicom_seg(liver.with_array(labels), sample / "ct", names, tmp_path / "s.dcm")
    back, seg_names = read_dicom_seg(out, sample / "ct")
    segment_to_class = np.array([0, 2, 3, 5])
    np.testing.assert_array_equal(segment_to_class[back.array], labels)
    assert seg_names == {1: "liver", 2: "left kidney", 3: "my region"}
    ds = pydicom.dcmread(out)
    kinds = [s.SegmentedPropertyTypeCodeSequence[0] for s in ds.SegmentSequence]
    assert [(k.CodeValue, k.CodingSchemeDesignator) for k in kinds] == [
        ("10200004", "SCT"),  # liver
        ("64033007", "SCT"),  # kidney
        ("my_region", PRIVATE_SCHEME),
    ]
    ct = pydicom.dcmread(sample / "ct" / "01.dcm", stop_before_pixels=True)
    assert ds.StudyInstanceUID == ct.StudyInstanceUID
    assert ds.FrameOfReferenceUID == ct.FrameOfReferenceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID


def test_an_oblique_series_round_trips_from_the_volume_meta(tmp_path):
    stored = np.random.default_rng(0).integers(0, 900, size=(6, 16, 12)).astype(np.int16)
    write_series(tmp_path / "ct", stored, orientation=TILTED)
    image = read_image(tmp_path / "ct")
    labels = np.random.default_rng(1).integers(0, 3, size=(1, 6, 16, 12)).astype(np.uint8)
    names = {1: "tumour", 2: "edema"}
    out = write_dicom_seg(image.with_array(labels), None, names, tmp_path / "seg.dcm")
    back, _ = read_dicom_seg(out, tmp_path / "ct")
    np.testing.assert_array_equal(back.array, labels)
    category = pydicom.dcmread(out).SegmentSequence[0].SegmentedPropertyCategoryCodeSequence[0]
    assert category.CodeMeaning == "Morphologically Abnormal Structure"


def test_labels_of_another_geometry_or_label_space_are_refused(tmp_path):
    write_series(tmp_path / "ct", np.zeros((4, 8, 8), np.int16))
    image = read_image(tmp_path / "ct")
    with pytest.raises(DicomSegError, match="not classes"):
        write_dicom_seg(
            image.with_array(np.full((1, 4, 8, 8), 7, np.uint8)), None, {1: "a"}, tmp_path / "x.dcm"
        )
    moved = image.with_array(np.zeros((1, 4, 8, 8), np.uint8))
    moved.origin_mm = moved.origin_mm + 5.0
    with pytest.raises(DicomSegError, match="differs from the series"):
        write_dicom_seg(moved, tmp_path / "ct", {1: "a"}, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_structure_codes_follow_names_and_sides():
    assert structure_codes("right_kidney")[1].value == "64033007"
    assert structure_codes("Hippocampus anterior")[1].value == "5366008"
    assert structure_codes("brain tumour")[1].meaning in ("Neoplasm", "Tumor")
