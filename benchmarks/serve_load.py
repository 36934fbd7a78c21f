"""Load and abuse test of ``medfoundry serve``.

Starts the server as a subprocess (its own work folder, a free port), submits N concurrent uploads
+ predictions of real volumes (default: 10 hippocampus MRIs from the shared data), waits for all,
and prints: jobs ok / failed / lost, p50 / p95 end-to-end latency (upload start -> job done),
the peak RSS of the server process (sampled every 50 ms with psutil), then each bad input and
whether it got past its check. Results also go to benchmarks/_out/serve_load.json.

    .venv/bin/python benchmarks/serve_load.py --model RUN_OR_CHECKPOINT [--jobs 10] [--workers 1]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDFOUNDRY_DATA", REPO.parent / "shared" / "data"))
MAX_UPLOAD_MB = 16


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="segmentation model (run/checkpoint)")
    ap.add_argument("--images", nargs="*", type=Path, help="default: hippocampus imagesTr")
    ap.add_argument("--jobs", type=int, default=10, help="concurrent uploads (default 10)")
    ap.add_argument("--workers", type=int, default=1, help="server --workers (default 1)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for all jobs")
    a = ap.parse_args()
    images = a.images or sorted((DATA / "msd_task04_hippocampus" / "imagesTr").glob("*.nii.gz"))
    images = [images[i % len(images)] for i in range(a.jobs)]
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        server, url, token = start_server(a.model, Path(tmp), a.workers)
        peak = PeakRss(server.pid)
        try:
            load = run_load(url, token, images, a.timeout)
            bad = run_bad_inputs(url, token, images[0])
        finally:
            peak.stop()
            server.terminate()
            server.wait(30)
    result = {**load, "peak_rss_mb": peak.peak_mb, "bad_inputs": bad, "workers": a.workers}
    print_tables(result, len(images))
    out = REPO / "benchmarks" / "_out" / "serve_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    passed = sum(1 for b in bad if b["got_past"])
    return 0 if load["failed"] == load["lost"] == passed == 0 else 1


def start_server(model: Path, workdir: Path, workers: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "medfoundry.cli.main", "-q", "serve", "--workdir", str(workdir)]
    cmd += ["--model", f"bench={model}", "--port", str(port), "--workers", str(workers)]
    cmd += ["--max-upload-mb", str(MAX_UPLOAD_MB), "--device", "cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines = []
    while len(lines) < 3:  # the banner, the token, "serving ..."
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"server did not start: {lines}")
        lines.append(line.strip())
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return proc, url, lines[1]
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("server not answering")


class PeakRss:
    """The peak resident memory of a process tree, sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                return
            time.sleep(every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def run_load(url: str, token: str, images: list[Path], timeout: float) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    results: list[dict] = [{} for _ in images]

    def one(i: int, image: Path) -> None:
        t0 = time.perf_counter()
        with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
            r = c.post(
                "/api/jobs",
                params={"model": "bench", "filename": image.name},
                content=image.read_bytes(),
            )
            if r.status_code != 202:
                results[i] = {"state": f"refused {r.status_code}: {r.text[:100]}"}
                return
            job_id = r.json()["id"]
            results[i] = {"id": job_id, "state": "submitted"}
            while time.perf_counter() - t0 < timeout:
                job = c.get(f"/api/jobs/{job_id}").json()
                if job["state"] in ("done", "failed"):
                    break
                time.sleep(0.1)
            else:
                return
            ok = job["state"] == "done"
            if ok:  # the labels must download as a gzip NIfTI
                body = c.get(f"/api/jobs/{job_id}/files/labels").content
                ok = len(gzip.decompress(body)) > 348
            results[i] = {
                "id": job_id,
                "state": "done" if ok else "failed",
                "error": job.get("error"),
                "latency_s": time.perf_counter() - t0,
                "run_s": (job["finished"] or 0) - (job["started"] or 0),
            }

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(images)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    listed = {j["id"] for j in httpx.get(url + "/api/jobs", headers=headers).json()}
    lat = [r["latency_s"] for r in results if r.get("state") == "done"]
    lost = [r for r in results if r.get("state") not in ("done", "failed") or r["id"] not in listed]
    return {
        "jobs": len(images),
        "ok": len(lat),
        "failed": sum(1 for r in results if r.get("state") == "failed"),
        "lost": len(lost),
        "errors": sorted({r.get("error") or r.get("state") for r in results if r not in lost}),
        "p50_s": round(float(np.percentile(lat, 50)), 2) if lat else None,
        "p95_s": round(float(np.percentile(lat, 95)), 2) if lat else None,
        "run_p50_s": round(float(np.median([r["run_s"] for r in results if "run_s" in r])), 2)
        if lat
        else None,
        "wall_s": round(wall, 2),
    }


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def run_bad_inputs(url: str, token: str, image: Path) -> list[dict]:
    """Each bad input: did it get past its check (2xx, or for a truncated file a done job)?"""
    good = image.read_bytes()
    raw = gzip.decompress(good)
    symlink = io.BytesIO()
    with zipfile.ZipFile(symlink, "w") as zf:
        info = zipfile.ZipInfo("series/link.dcm")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    cases = [
        ("wrong token", "case.nii.gz", good, "not-a-token"),
        ("no token", "case.nii.gz", good, None),
        ("oversized upload", "big.nii.gz", good + os.urandom((MAX_UPLOAD_MB + 1) * 2**20), token),
        ("path-traversal zip", "s.zip", _zip({"../../../../tmp/evil.dcm": b"x"}), token),
        ("absolute-path zip", "s.zip", _zip({"/tmp/evil.dcm": b"x"}), token),
        ("symlink zip", "s.zip", symlink.getvalue(), token),
        ("zip bomb", "s.zip", _zip({"a.dcm": b"\0" * 50_000_000}), token),
        ("non-image file (.txt)", "notes.txt", b"hello", token),
        ("non-image file named .nii.gz", "x.nii.gz", b"#!/bin/sh\necho owned\n", token),
        ("pickle named .nii", "x.nii", b"\x80\x04\x95" + b"\0" * 400, token),
        ("corrupt NIfTI header", "x.nii", raw[:40] + b"\0" * 16 + raw[56:], token),
        ("corrupt NIfTI (truncated data)", "x.nii.gz", good[: len(good) // 2], token),
    ]
    rows = []
    with httpx.Client(base_url=url, timeout=60) as c:
        for name, filename, body, tok in cases:
            headers = {"Authorization": f"Bearer {tok}"} if tok else {}
            r = c.post(
                "/api/jobs",
                params={"model": "bench", "filename": filename},
                content=body,
                headers=headers,
            )
            answer = f"{r.status_code} {r.json().get('detail', '')}"[:90]
            got_past = r.status_code < 300
            if got_past:  # accepted: the job must fail when the file is read
                job_id = r.json()["id"]
                while (job := c.get(f"/api/jobs/{job_id}", headers=headers).json())["state"] in (
                    "queued",
                    "running",
                ):
                    time.sleep(0.1)
                got_past = job["state"] == "done"
                answer = f"job {job['state']}: {job['error']}"[:90]
            rows.append({"input": name, "got_past": got_past, "answer": answer})
    evil = [p for p in (Path("/tmp/evil.dcm"),) if p.exists()]
    if evil:
        rows.append(
            {"input": "file written outside the job folder", "got_past": True, "answer": ""}
        )
    return rows


def print_tables(r: dict, n: int) -> None:
    print(f"\n{n} concurrent uploads + predictions, server --workers {r['workers']}")
    print(
        "| jobs | ok | failed | lost | p50 latency s | p95 latency s | p50 run s (one job) "
        "| wall s | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {r['jobs']} | {r['ok']} | {r['failed']} | {r['lost']} | {r['p50_s']} | {r['p95_s']} "
        f"| {r['run_p50_s']} | {r['wall_s']} | {r['peak_rss_mb']} |"
    )
    if r["failed"]:
        print("errors:", r["errors"])
    print("\n| bad input | got past its check | answer |\n|---|---|---|")
    for b in r["bad_inputs"]:
        print(f"| {b['input']} | {'YES' if b['got_past'] else 'no'} | {b['answer']} |")


if __name__ == "__main__":
    sys.exit(main())
