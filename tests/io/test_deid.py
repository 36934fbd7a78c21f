"""De-identification (PS3.15 basic profile via dicom-anonymizer): identifiers gone from every
output byte and from the report; the images, their geometry and the series grouping kept."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from medfoundry import MedfoundryError
from medfoundry.io import read_image
from medfoundry.io.deid import deidentify
from tests.io.synthetic_dicom import PATIENT, write_series


def _add_identifiers(folder):
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.InstitutionName, ds.ReferringPhysicianName = "St Elsewhere Hospital", "House^Gregory"
        ds.private_block(0x0029, "ACME", create=True).add_new(0x10, "LO", "secret note")
        ds.save_as(f, enforce_file_format=True)


def test_a_series_loses_its_identifiers_but_keeps_its_images(tmp_path):
    stored = np.random.default_rng(0).integers(0, 2000, size=(5, 10, 9)).astype(np.int16)
    write_series(tmp_path / "in" / "Doe_Jane", stored, orientation=(1, 0, 0, 0, 0.8, -0.6))
    _add_identifiers(tmp_path / "in" / "Doe_Jane")
    report = deidentify(tmp_path / "in", tmp_path / "out", progress=False)
    files = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(files) == 5 and report["files"] == 5 and report["series"] == 1
    secrets = [*PATIENT.values(), "Elsewhere", "Gregory", "secret note", "Doe_Jane"]
    for f in [*files, tmp_path / "out" / "deid_report.json"]:
        data = f.read_bytes()
        assert not [s for s in secrets if s.encode() in data], f
    ds = pydicom.dcmread(files[0])
    assert ds.PatientIdentityRemoved == "YES" and not any(e.tag.is_private for e in ds)
    changes = report["changes"]
    assert changes["PatientName"] in ({"replaced": 5}, {"emptied": 5})
    assert changes["SOPInstanceUID"] == {"replaced": 5}
    assert report["private_elements_removed"] == 10  # creator + element, 5 files
    before, after = read_image(tmp_path / "in" / "Doe_Jane"), read_image(tmp_path / "out")
    np.testing.assert_array_equal(after.array, before.array)
    assert after.same_geometry(before)


def test_the_sample_ct_and_seg_deidentify_into_two_series(data_dir, tmp_path):
    report = deidentify(data_dir / "dicom_ct_seg_sample", tmp_path / "out", progress=False)
    assert report["files"] == 4 and report["series"] == 2
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file():
            assert b"JANCT000" not in f.read_bytes() and b"99000" not in f.read_bytes()
    seg = next(f for f in (tmp_path / "out").rglob("*.dcm") if pydicom.dcmread(f).Modality == "SEG")
    ct = read_image(tmp_path / "out")  # the CT series; the SEG is not an image series
    refs = {
        r.ReferencedSOPInstanceUID
        for r in pydicom.dcmread(seg).ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    ct_uids = {pydicom.dcmread(f).SOPInstanceUID for f in ct.meta["dicom"]["files"]}
    assert refs == ct_uids  # the SEG still points at its (renamed) images
    assert json.loads((tmp_path / "out" / "deid_report.json").read_text())["files"] == 4


def test_bad_requests_write_nothing(tmp_path, data_dir):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x")
    with pytest.raises(MedfoundryError, match="no DICOM files"):
        deidentify(tmp_path / "in", tmp_path / "out", progress=False)
    with pytest.raises(MedfoundryError, match="inside the input"):
        deidentify(tmp_path / "in", tmp_path / "in" / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "in" / "out").exists()
