"""Every bad input is refused by its check, with the right status, and leaves nothing behind;
users see only their own jobs. Run against a live server (uvicorn in a thread)."""

from __future__ import annotations

import gzip
import io
import threading
import time
import zipfile
from pathlib import Path

import httpx

from medfoundry.serve import ServeConfig, TokenStore, create_app
from tests.serve.conftest import bearer, live_server, wait_done


def _tree(root: Path) -> list[str]:
    """Files and job folders (``jobs/<user>/<id>``) under ``root``; token file aside."""
    rel = (p.relative_to(root) for p in root.rglob("*") if p.name != "tokens.json")
    return sorted(str(p) for p in rel if len(p.parts) >= 3 or (root / p).is_file())


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def bad_inputs(hippo_dir: Path) -> dict[str, tuple[str, bytes, int]]:
    """name -> (upload file name, body, expected status): the list the web app must refuse."""
    image = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0].read_bytes()
    raw = gzip.decompress(image)
    return {
        "oversized upload": ("big.nii.gz", image + b"\0" * (9 * 2**20), 413),
        "path-traversal zip": ("series.zip", _zip({"../../../evil.dcm": b"x"}), 400),
        "absolute-path zip": ("series.zip", _zip({"/tmp/evil.dcm": b"x"}), 400),
        "zip bomb": ("series.zip", _zip({"a.dcm": b"\0" * 30_000_000}), 413),
        "non-image file (by name)": ("notes.txt", b"hello", 415),
        "non-image file (by content)": ("scan.nii.gz", b"#!/bin/sh\necho owned\n", 415),
        "pickle disguised as NIfTI": ("scan.nii", b"\x80\x04\x95" + b"\0" * 400, 415),
        "not a zip": ("series.zip", image, 415),
        "corrupt NIfTI header": ("scan.nii", raw[:40] + b"\0" * 16 + raw[56:], 400),
        "empty upload": ("scan.nii.gz", b"", 400),
    }


def test_wrong_token_is_refused_everywhere(server):
    url, token, _ = server
    with httpx.Client(base_url=url) as c:
        for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {token}"}):
            for method, path in [
                ("GET", "/api/me"),
                ("GET", "/api/models"),
                ("GET", "/api/jobs"),
                ("POST", "/api/jobs?model=small&filename=a.nii.gz"),
                ("GET", "/api/jobs/" + "0" * 32),
                ("GET", "/api/jobs/" + "0" * 32 + "/files/labels"),
            ]:
                r = c.request(method, path, headers=headers, content=b"x")
                assert r.status_code == 401, (method, path, headers)
        assert c.get("/api/health").json()["ok"]
        assert c.get("/api/me", headers=bearer(token)).json() == {"user": "admin"}


def test_bad_inputs_are_refused_and_leave_nothing(server, hippo_dir):
    url, token, workdir = server
    before = _tree(workdir)
    with httpx.Client(base_url=url, timeout=60) as c:
        for name, (filename, body, status) in bad_inputs(hippo_dir).items():
            r = c.post(
                "/api/jobs",
                params={"model": "small", "filename": filename},
                content=body,
                headers=bearer(token),
            )
            assert r.status_code == status, (name, r.status_code, r.text)
            assert r.json()["detail"], name
            assert _tree(workdir) == before, name
        assert c.get("/api/jobs", headers=bearer(token)).json() == []
    assert not list(workdir.parent.rglob("evil*"))


def test_oversized_streamed_upload_is_cut_off(server):
    """No Content-Length (chunked): the cap is enforced while streaming, the partial file removed."""
    url, token, workdir = server
    before = _tree(workdir)

    def chunks():
        for _ in range(20):
            yield b"\0" * 2**20

    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post(
            "/api/jobs",
            params={"model": "small", "filename": "a.nii"},
            content=chunks(),
            headers=bearer(token),
        )
    assert r.status_code == 413
    assert _tree(workdir) == before


def test_unknown_model_and_job(server):
    url, token, _ = server
    with httpx.Client(base_url=url) as c:
        r = c.post("/api/jobs?model=nope&filename=a.nii.gz", content=b"x", headers=bearer(token))
        assert r.status_code == 400 and "unknown model" in r.json()["detail"]
        for job_id in ("0" * 32, "..%2F..%2Ftokens.json", "abc"):
            assert c.get(f"/api/jobs/{job_id}", headers=bearer(token)).status_code == 404


def test_users_see_only_their_own_jobs_and_truncated_nifti_fails_cleanly(server, hippo_dir):
    url, admin, workdir = server
    bob = TokenStore(workdir).add_user("bob")  # added while the server runs
    image = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0].read_bytes()
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post(
            "/api/jobs",
            params={"model": "small", "filename": "cut.nii.gz"},
            content=image[: len(image) // 2],  # header fine, data cut: found when read
            headers=bearer(admin),
        )
        assert r.status_code == 202
        job = wait_done(c, r.json()["id"], admin)
        assert job["state"] == "failed"
        assert job["error"].startswith("cut.nii.gz: could not read the image")
        assert str(workdir) not in job["error"] and "\n" not in job["error"]
        assert c.get(f"/api/jobs/{job['id']}", headers=bearer(bob)).status_code == 404
        assert c.get(f"/api/jobs/{job['id']}/files/image", headers=bearer(bob)).status_code == 404
        assert c.get("/api/jobs", headers=bearer(bob)).json() == []
        assert [j["id"] for j in c.get("/api/jobs", headers=bearer(admin)).json()] == [job["id"]]
    assert (workdir / "jobs" / "admin" / job["id"]).is_dir()
    assert not (workdir / "jobs" / "bob").exists()


def test_full_queue_answers_503_and_keeps_nothing(tmp_path, served_models, hippo_dir):
    token = TokenStore(tmp_path).ensure_admin()
    app = create_app(ServeConfig(tmp_path, max_queue=1), models=served_models)
    gate = threading.Event()
    app.state.jobs._run = lambda job, folder: gate.wait(30)  # a worker busy for as long as needed
    body = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0].read_bytes()
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as c:

        def submit():
            return c.post(
                "/api/jobs?model=small&filename=a.nii.gz", content=body, headers=bearer(token)
            )

        first = submit().json()
        for _ in range(100):  # until the worker takes it
            state = c.get(f"/api/jobs/{first['id']}", headers=bearer(token)).json()["state"]
            if state == "running":
                break
            time.sleep(0.1)
        assert state == "running"
        assert submit().status_code == 202  # waits in the queue
        before = _tree(tmp_path)
        r = submit()
        assert r.status_code == 503 and r.headers["retry-after"]
        assert _tree(tmp_path) == before
        assert len(c.get("/api/jobs", headers=bearer(token)).json()) == 2
        gate.set()
