"""The findings report: its files, that the JSON is compute_findings', the HTML page, and
``medfoundry report`` end to end on a real CT case and an MR dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfoundry.cli.main import main
from medfoundry.evaluation.findings import compute_findings
from medfoundry.io import Volume, read_image, read_label
from medfoundry.workflows.findings_report import write_findings_report

SPACING = (2.5, 0.8, 0.9)


@pytest.fixture()
def case():
    """Two structures (one with two components) and an absent one, with a CT-like image."""
    lab = np.zeros((10, 40, 36), np.uint8)
    lab[3:7, 5:20, 6:18] = 1
    lab[5, 30:33, 25:28] = 1
    lab[2:8, 22:35, 10:16] = 2
    rng = np.random.default_rng(0)
    img = rng.normal(50, 10, lab.shape).astype(np.float32)
    direction = np.array([[0, 0, 1.0], [0, -1.0, 0], [-1.0, 0, 0]])  # flipped Z and Y
    labels = Volume(lab[None], SPACING, (5.0, 5.0, -30.0), direction)
    return labels, labels.with_array(img[None]), {1: "liver <b>& $5", 2: "lesion", 3: "absent"}


def test_report_files_json_and_html(case, tmp_path):
    labels, image, names = case
    out = tmp_path / "out"
    findings = write_findings_report(labels, names, out, image, "CT", case="c1")
    assert sorted(p.name for p in out.iterdir()) == ["c1_findings.html", "c1_findings.json"]
    on_disk = json.loads((out / "c1_findings.json").read_text())
    assert (
        on_disk == findings == json.loads(json.dumps(compute_findings(labels, names, image, "CT")))
    )
    assert on_disk["structures"][0]["n_components"] == 2
    assert on_disk["structures"][0]["intensity"][0]["unit"] == "HU"
    page = (out / "c1_findings.html").read_text()
    assert "liver &lt;b&gt;&amp; $5" in page and "<b>" not in page  # names are escaped
    assert "lesion" in page and "absent" in page
    assert page.count("data:image/png;base64,") == 2  # one overlay per present structure
    assert "src='http" not in page and 'src="http' not in page  # self-contained


def test_pdf_on_request_and_no_image(case, tmp_path):
    labels, _, names = case
    findings = write_findings_report(labels, names, tmp_path, case="c2", pdf=True)
    assert (tmp_path / "c2_findings.pdf").read_bytes()[:5] == b"%PDF-"
    assert findings["intensity_unit"] is None
    assert all(s["intensity"] is None for s in findings["structures"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_cli_on_a_real_ct_case_gives_hu_statistics(data_dir, tmp_path, capsys):
    spleen = data_dir / "msd_spleen_samples"
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    images.mkdir()
    # Folders of links (no copies): the image is an nnU-Net channel file matched by case name.
    (labels / "spleen_2_cropped.nii.gz").symlink_to(spleen / "labelsTr/spleen_2_cropped.nii.gz")
    (images / "spleen_2_cropped_0000.nii.gz").symlink_to(
        spleen / "imagesTr/spleen_2_cropped.nii.gz"
    )
    names = tmp_path / "dataset.json"
    names.write_text(json.dumps({"labels": {"background": 0, "spleen": 1}}))
    out = tmp_path / "out"
    argv = ["report", "-l", str(labels), "-i", str(images), "-o", str(out), "--names", str(names)]
    assert main([*argv, "--modality", "CT", "--pdf"]) == 0
    printed = capsys.readouterr().out
    assert "spleen" in printed and str(out / "spleen_2_cropped_findings.html") in printed
    f = json.loads((out / "spleen_2_cropped_findings.json").read_text())
    assert f["modality"] == "CT" and f["intensity_unit"] == "HU"
    (spl,) = f["structures"]
    assert spl["name"] == "spleen" and spl["n_components"] >= 1
    lab = read_label(spleen / "labelsTr/spleen_2_cropped.nii.gz")
    img = read_image(spleen / "imagesTr/spleen_2_cropped.nii.gz")
    hu = img.array[0][lab.array[0] == 1].astype(np.float64)
    st = spl["intensity"][0]
    assert st["unit"] == "HU" and st["mean"] == pytest.approx(hu.mean(), rel=1e-6)
    assert 40 < st["median"] < 150  # enhanced spleen parenchyma in HU
    assert spl["volume_ml"] == pytest.approx(hu.size * np.prod(lab.spacing_mm) / 1000.0)
    assert (out / "spleen_2_cropped_findings.pdf").is_file()


def test_cli_takes_names_and_modality_from_a_dataset_json(data_dir, tmp_path, capsys):
    chaos = data_dir / "chaos_t2"
    label = chaos / "labelsTr/chaos_1.nii.gz"
    argv = ["report", "-l", str(label), "-i", str(chaos / "imagesTr/chaos_1.nii.gz")]
    assert main([*argv, "-o", str(tmp_path), "--names", str(chaos / "dataset.json")]) == 0
    f = json.loads((tmp_path / "chaos_1_findings.json").read_text())
    assert f["modality"] == "MRI" and f["intensity_unit"] == "a.u."
    assert [s["name"] for s in f["structures"]] == [
        "liver",
        "right_kidney",
        "left_kidney",
        "spleen",
    ]
    assert f["structures"][0]["volume_ml"] > 500  # an adult liver


def test_cli_takes_the_modality_from_a_dicom_series(data_dir, tmp_path):
    from medfoundry.io import write_volume

    series = data_dir / "dicom_ct_seg_sample" / "ct"
    ct = read_image(series)
    lab = np.zeros(ct.array.shape, np.uint8)
    lab[0, :, 200:260, 200:260] = 1  # a box in every slice of the 3-slice series
    write_volume(Volume(lab, ct.spacing_mm, ct.origin_mm, ct.direction), tmp_path / "box.nii.gz")
    argv = ["report", "-l", str(tmp_path / "box.nii.gz"), "-i", str(series), "-o", str(tmp_path)]
    assert main(argv) == 0
    f = json.loads((tmp_path / "box_findings.json").read_text())
    assert f["modality"] == "CT" and f["intensity_unit"] == "HU"
    hu = ct.array[0, :, 200:260, 200:260]
    assert f["structures"][0]["intensity"][0]["mean"] == pytest.approx(float(hu.mean()), rel=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-l", "{tmp}/missing.nii.gz"], "not found"),
        (
            [
                "-l",
                "{spleen}/labelsTr/spleen_2_cropped.nii.gz",
                "-i",
                "{spleen}/imagesTr/spleen_8.nii.gz",
            ],
            "image shape",
        ),
        (
            ["-l", "{spleen}/labelsTr", "-i", "{spleen}/labelsTr/spleen_8.nii.gz"],
            "no image for case",
        ),
    ],
)
def test_cli_bad_input_is_a_one_line_error(extra, message, data_dir, tmp_path, capsys):
    spleen = data_dir / "msd_spleen_samples"
    extra = [e.format(tmp=tmp_path, spleen=spleen) for e in extra]
    assert main(["report", *extra, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("medfoundry: error:") and message in err


def test_cli_reads_class_names_from_a_model_file(tmp_path, capsys):
    from medfoundry.runs.checkpoint import DESCRIPTION_KEYS, save_checkpoint

    meta = {k: {} for k in DESCRIPTION_KEYS}
    meta.update(
        kind="model",
        labels={"background": 0, "liver": 1, "spleen": 5},
        plan={"datasets": {"abd": {}}},
        datasets={"abd": {"local_to_global": {"0": 0, "1": 5}, "modality": ["CT"]}},
    )
    model = save_checkpoint(tmp_path / "m.safetensors", meta, {})
    lab = np.zeros((1, 4, 6, 6), np.uint8)
    lab[0, 1:3, 2:4, 2:4] = 1  # the model writes its dataset's local id 1 for spleen
    from medfoundry.io import write_volume

    write_volume(Volume(lab, (2.0, 1.0, 1.0)), tmp_path / "p.nii.gz")
    argv = ["report", "-l", str(tmp_path / "p.nii.gz"), "-o", str(tmp_path), "-m", str(model)]
    assert main(argv) == 0
    f = json.loads((tmp_path / "p_findings.json").read_text())
    assert [s["name"] for s in f["structures"]] == ["spleen"] and f["modality"] == "CT"
    assert f["structures"][0]["volume_ml"] == pytest.approx(8 * 2.0 / 1000.0)


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = capsys.readouterr().out
    assert "--names" in text and "--pdf" in text and "26-connected" in text
