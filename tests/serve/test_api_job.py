"""Jobs end to end through the HTTP API, with the small trained model on real volumes."""

from __future__ import annotations

import io
import json
import zipfile

import httpx
import numpy as np
import pytest

from medfoundry.io import read_image, read_label, write_volume
from tests.serve.conftest import bearer, wait_done


def _submit(c: httpx.Client, token: str, filename: str, body: bytes) -> dict:
    r = c.post(
        "/api/jobs",
        params={"model": "small", "filename": filename},
        content=body,
        headers=bearer(token),
    )
    assert r.status_code == 202, r.text
    return r.json()


def test_nifti_job_end_to_end_with_correction(server, hippo_dir, tmp_path):
    url, token, workdir = server
    source = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]
    with httpx.Client(base_url=url, timeout=60) as c:
        models = c.get("/api/models", headers=bearer(token)).json()
        assert models[0]["name"] == "small" and models[0]["classes"]
        job = wait_done(c, _submit(c, token, source.name, source.read_bytes())["id"], token)
        assert job["state"] == "done", job["error"]
        assert job["progress"] == 1.0 and {"image", "labels"} <= set(job["files"])
        r = c.get(f"/api/jobs/{job['id']}/files/labels", headers=bearer(token))
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        (tmp_path / "labels.nii.gz").write_bytes(r.content)
        labels = read_label(tmp_path / "labels.nii.gz")
        image = read_image(source)
        assert labels.same_geometry(image)
        assert set(np.unique(labels.array)) <= {0, *map(int, job["class_names"])}
        if "findings_json" in job["files"]:
            r = c.get(f"/api/jobs/{job['id']}/files/findings_json", headers=bearer(token))
            assert json.loads(r.content) and job["findings"]

        # a brush correction: the model's labels kept, the corrected ones served
        fixed = labels.array.copy()
        fixed[:] = 0
        fixed[0, 5:8, 10:15, 10:15] = int(next(iter(job["class_names"])))
        write_volume(labels.with_array(fixed), tmp_path / "fixed.nii.gz")
        r = c.post(
            f"/api/jobs/{job['id']}/labels",
            content=(tmp_path / "fixed.nii.gz").read_bytes(),
            headers=bearer(token),
        )
        assert r.status_code == 200, r.text
        assert "labels_model" in r.json()["files"]
        r = c.get(f"/api/jobs/{job['id']}/files/labels", headers=bearer(token))
        (tmp_path / "served.nii.gz").write_bytes(r.content)
        assert np.array_equal(read_label(tmp_path / "served.nii.gz").array, fixed)
        write_volume(labels.with_array(fixed[:, :2]), tmp_path / "wrong.nii.gz")
        r = c.post(
            f"/api/jobs/{job['id']}/labels",
            content=(tmp_path / "wrong.nii.gz").read_bytes(),
            headers=bearer(token),
        )
        assert r.status_code == 400 and "shape" in r.json()["detail"]
    folder = workdir / "jobs" / "admin" / job["id"]
    assert {"image.nii.gz", "labels.nii.gz", "labels_model.nii.gz", "job.json"} <= {
        p.name for p in folder.iterdir()
    }


def _crop_slice(path, size: int) -> bytes:
    """A DICOM slice cropped to its central ``size`` x ``size`` pixels (position moved to match):
    the real series, quicker to segment."""
    import pydicom

    ds = pydicom.dcmread(path)
    r0, c0 = (ds.Rows - size) // 2, (ds.Columns - size) // 2
    pixels = ds.pixel_array[r0 : r0 + size, c0 : c0 + size].copy()
    row_dir, col_dir = (
        np.array(ds.ImageOrientationPatient[:3]),
        np.array(ds.ImageOrientationPatient[3:]),
    )
    dy, dx = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
    ds.ImagePositionPatient = [
        float(v)
        for v in np.array(ds.ImagePositionPatient, float) + c0 * dx * row_dir + r0 * dy * col_dir
    ]
    ds.Rows, ds.Columns, ds.PixelData = size, size, pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_zipped_dicom_series_gives_dicom_seg(server, data_dir, tmp_path):
    series = data_dir / "dicom_ct_seg_sample" / "ct"
    if not series.is_dir():
        pytest.skip(f"no DICOM sample at {series}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(series.iterdir()):
            zf.writestr(f"study/ct/{f.name}", _crop_slice(f, 96))
    url, token, _ = server
    with httpx.Client(base_url=url, timeout=60) as c:
        job = wait_done(c, _submit(c, token, "ct.zip", buf.getvalue())["id"], token, 180)
        assert job["state"] == "done", job["error"]
        assert job["input_kind"] == "dicom"
        if "seg" not in job["files"]:
            pytest.fail(f"no DICOM SEG: {job['notes']}")
        r = c.get(f"/api/jobs/{job['id']}/files/seg", headers=bearer(token))
        assert r.status_code == 200
    import pydicom

    (tmp_path / "seg.dcm").write_bytes(r.content)
    assert pydicom.dcmread(tmp_path / "seg.dcm").Modality == "SEG"


@pytest.fixture
def prompt_server(tmp_path, served_models, promptable_run):
    from medfoundry.serve import ServeConfig, TokenStore, create_app
    from medfoundry.serve.runner import ModelSet
    from tests.serve.conftest import live_server

    both = ModelSet({"prompt": promptable_run}, device="cpu")
    both.models["small"] = served_models.models["small"]
    token = TokenStore(tmp_path).ensure_admin()
    with live_server(create_app(ServeConfig(tmp_path), models=both)) as url:
        yield url, token


def test_clicks_with_a_promptable_model(prompt_server, hippo_dir, tmp_path):
    url, token = prompt_server
    source = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]
    reference = read_label(hippo_dir / "labelsTr" / source.name)
    z, y, x = (int(v) for v in np.argwhere(reference.array[0] == 1).mean(axis=0).round())
    with httpx.Client(base_url=url, timeout=120) as c:
        models = {m["name"]: m for m in c.get("/api/models", headers=bearer(token)).json()}
        assert models["prompt"]["promptable"] and not models["small"]["promptable"]
        job = wait_done(c, _submit(c, token, source.name, source.read_bytes())["id"], token)
        assert job["state"] == "done", job["error"]
        label = int(next(iter(job["class_names"])))
        clicks = {"points": [{"zyx": [z, y, x]}], "label": label}
        r = c.post(f"/api/jobs/{job['id']}/clicks", json=clicks, headers=bearer(token))
        assert r.status_code == 400 and "prompts" in r.json()["detail"]  # the job's model: none
        r = c.post(
            f"/api/jobs/{job['id']}/clicks",
            json={**clicks, "model": "prompt"},
            headers=bearer(token),
        )
        assert r.status_code == 200, r.text
        voxels = r.json()["object_voxels"]
        r = c.get(f"/api/jobs/{job['id']}/files/labels", headers=bearer(token))
        (tmp_path / "labels.nii.gz").write_bytes(r.content)
        assert int((read_label(tmp_path / "labels.nii.gz").array == label).sum()) == voxels
        outside = {"points": [{"zyx": [999, 0, 0]}], "label": label, "model": "prompt"}
        r = c.post(f"/api/jobs/{job['id']}/clicks", json=outside, headers=bearer(token))
        assert r.status_code == 400 and "outside" in r.json()["detail"]
