"""DICOM through the CLI: predict/segment a series into a DICOM SEG that reads back as the NIfTI
output, `dicom ls`, `deid`, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from medfoundry.cli.main import main
from medfoundry.io import read_image, read_label
from medfoundry.io.dicom_seg import read_dicom_seg
from tests.io.synthetic_dicom import write_series


@pytest.fixture(scope="module")
def series(hippo_dir, tmp_path_factory):
    """A real hippocampus MR volume written as an oblique DICOM series (files in random order)."""
    image = read_image(sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0])
    folder = tmp_path_factory.mktemp("dicom") / "mr"
    tilt = (1.0, 0.0, 0.0, 0.0, 0.9848078, -0.1736482)  # 10 degrees about x
    stored = np.round(image.array[0]).astype(np.int16)
    spacing = tuple(image.spacing_mm)
    write_series(folder, stored, spacing, orientation=tilt, modality="MR", intercept=0.0)
    return folder


def test_predict_writes_a_seg_of_the_series_equal_to_the_nifti_output(
    pretrained, series, tmp_path, capsys
):
    args = ["-q", "predict", "-m", str(pretrained), "-i", str(series), "--device", "cpu"]
    assert main([*args, "-o", str(tmp_path / "nii")]) == 0
    chosen = ["-q", "predict", "-m", str(pretrained), "-i", f"{series}::3", "--device", "cpu"]
    assert main([*chosen, "-o", str(tmp_path / "chosen")]) == 0  # series number 3, by name
    capsys.readouterr()
    assert main([*chosen, "-o", str(tmp_path / "chosen")]) == 0
    assert "kept 1" in capsys.readouterr().out  # a rerun keeps the case
    assert [p.name for p in (tmp_path / "chosen").glob("*.nii.gz")] == ["mr_3.nii.gz"]
    assert main([*args, "-o", str(tmp_path / "seg"), "--output-type", "dicom-seg", "--report"]) == 0
    nifti = read_label(tmp_path / "nii" / "mr.nii.gz")
    seg, names = read_dicom_seg(tmp_path / "seg" / "mr_seg.dcm", series)
    ds = pydicom.dcmread(tmp_path / "seg" / "mr_seg.dcm", stop_before_pixels=True)
    ids = [int(s.TrackingID.split()[-1]) for s in ds.SegmentSequence]  # "class <id>"
    to_class = np.array([0, *ids])
    np.testing.assert_array_equal(to_class[seg.array], nifti.array)
    assert nifti.same_geometry(seg) and len(names) == len(ids) >= 1
    assert nifti.array.any()  # a real prediction, not an empty map
    findings = json.loads((tmp_path / "seg" / "mr_findings.json").read_text())
    assert findings["modality"] == "MR" and findings["intensity_unit"] != "HU"
    volumes = {s["id"]: s["volume_ml"] for s in findings["structures"]}
    voxel_ml = float(np.prod(nifti.spacing_mm)) / 1000
    assert volumes == pytest.approx({i: (nifti.array == i).sum() * voxel_ml for i in ids})
    assert (tmp_path / "seg" / "mr_findings.html").is_file()
    sr = pydicom.dcmread(tmp_path / "seg" / "mr_findings_sr.dcm")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    present = [s for s in findings["structures"] if s["voxels"]]
    assert sorted(_numbers(sr, "Volume")) == pytest.approx(sorted(s["volume_ml"] for s in present))


def _numbers(ds, meaning: str) -> list[float]:
    """The values of every NUM content item called ``meaning`` in an SR tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "NUM" and name == meaning:
            found.append(float(item.MeasuredValueSequence[0].NumericValue))
        found += _numbers(item, meaning)
    return found


def test_segment_a_box_on_a_series_into_a_seg(promptable_run, series, hippo_dir, tmp_path, capsys):
    out = tmp_path / "box.dcm"
    argv = ["-q", "segment", "-m", str(promptable_run), "-i", str(series), "-o", str(out)]
    assert main([*argv, "--box", "10,10,10,25,30,25", "--output-type", "dicom-seg"]) == 0
    seg, names = read_dicom_seg(out, series)
    assert names == {1: "object"} and seg.shape_zyx == read_image(series).shape_zyx
    capsys.readouterr()
    nifti = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]
    argv = ["-q", "segment", "-m", str(promptable_run), "-i", str(nifti), "-o", str(tmp_path / "x")]
    assert main([*argv, "--box", "0,1,1,1,2,2", "--output-type", "dicom-seg"]) == 2
    assert "needs a DICOM series" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_dicom_ls_and_deid_from_the_command_line(data_dir, tmp_path, capsys):
    sample = data_dir / "dicom_ct_seg_sample"
    assert main(["dicom", "ls", str(sample), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["modality"], r["slices"]) for r in rows] == [("CT", 3)]
    assert main(["-q", "deid", str(sample), str(tmp_path / "out")]) == 0
    assert "de-identified 4 file(s) in 2 series" in capsys.readouterr().out
    assert main(["-q", "deid", str(sample), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists and is not an empty folder" in err[0]


def test_predict_dicom_seg_of_a_nifti_is_a_reported_failure(
    pretrained, hippo_dir, tmp_path, caplog
):
    image = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]
    argv = ["-q", "predict", "-m", str(pretrained), "-i", str(image), "-o", str(tmp_path / "o")]
    assert main([*argv, "--output-type", "dicom-seg", "--device", "cpu"]) == 1
    assert "needs a DICOM series" in caplog.text
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.dcm"))
