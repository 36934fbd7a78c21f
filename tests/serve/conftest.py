"""A live server per test module: the app under uvicorn in a thread, on a free local port."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from medfoundry.serve import ServeConfig, TokenStore, UploadLimits, create_app
from medfoundry.serve.runner import ModelSet


@contextmanager
def live_server(app):
    """Yield the base URL of ``app`` served by uvicorn in a thread; stop it afterwards."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def served_models(pretrained) -> ModelSet:
    """The small trained model (hippocampus + ACDC), loaded once, offered as 'small'."""
    return ModelSet({"small": Path(pretrained)}, device="cpu")


@pytest.fixture
def server(tmp_path, served_models):
    """A fresh server folder and live server: (base URL, admin token, work folder)."""
    workdir = tmp_path / "serve"
    token = TokenStore(workdir).ensure_admin()
    limits = UploadLimits(max_upload_bytes=8 * 2**20, max_zip_members=64)
    app = create_app(ServeConfig(workdir, limits=limits), models=served_models)
    with live_server(app) as url:
        yield url, token, workdir


def wait_done(client: httpx.Client, job_id: str, token: str, timeout: float = 120) -> dict:
    """Poll a job until done or failed; its record."""
    end = time.time() + timeout
    while time.time() < end:
        job = client.get(f"/api/jobs/{job_id}", headers=bearer(token)).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {job}")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}
