"""Findings as a DICOM SR (TID 1500) referencing the SEG it measures, on the real sample CT."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medfoundry.evaluation.findings import compute_findings
from medfoundry.io import read_image
from medfoundry.io.dicom_seg import read_dicom_seg, write_dicom_seg
from medfoundry.io.dicom_sr import write_findings_sr


def _items(ds, value_type: str) -> list:
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == value_type:
            found.append(item)
        found += _items(item, value_type)
    return found


def test_the_sr_holds_each_structures_measurements_and_points_at_its_segment(data_dir, tmp_path):
    sample = data_dir / "dicom_ct_seg_sample"
    liver, _ = read_dicom_seg(sample / "seg" / "liver.dcm", sample / "ct")
    labels = liver.array.astype(np.uint8)
    labels[0, 2, 10:20, 10:20] = 3  # a second structure, 100 voxels
    names = {1: "liver", 3: "lesion"}
    seg = write_dicom_seg(liver.with_array(labels), sample / "ct", names, tmp_path / "seg.dcm")
    ct = read_image(sample / "ct")
    findings = compute_findings(liver.with_array(labels), names, ct, "CT")
    out = write_findings_sr(findings, seg, ct.meta["dicom"]["files"], tmp_path / "sr.dcm")
    sr = pydicom.dcmread(out)
    nums = {}
    for item in _items(sr, "NUM"):
        key = item.ConceptNameCodeSequence[0].CodeMeaning
        nums.setdefault(key, []).append(float(item.MeasuredValueSequence[0].NumericValue))
    by_name = {s["name"]: s for s in findings["structures"]}
    assert nums["Volume"] == pytest.approx(
        [by_name["liver"]["volume_ml"], by_name["lesion"]["volume_ml"]]
    )
    assert nums["Mean"][0] == pytest.approx(by_name["liver"]["intensity"][0]["mean"])
    units = {
        i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue
        for i in _items(sr, "NUM")
    }
    assert "[hnsf'U]" in units and "ml" in units and "mm" in units
    refs = [i.ReferencedSOPSequence[0] for i in _items(sr, "IMAGE") if "ReferencedSOPSequence" in i]
    seg_uid = pydicom.dcmread(seg, stop_before_pixels=True).SOPInstanceUID
    assert sorted(
        int(r.ReferencedSegmentNumber) for r in refs if r.ReferencedSOPInstanceUID == seg_uid
    ) == [1, 2]
