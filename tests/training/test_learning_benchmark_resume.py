"""``benchmarks/pretrain_learning.py --resume``: a benchmark stopped by a time limit (SIGTERM) goes on
from its runs' latest checkpoints instead of starting again, on the real hippocampus data."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.real_data

STEPS = 300


def _bench(data: Path, work: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "benchmarks" / "pretrain_learning.py"),
        "--data",
        str(data),
        "--work",
        str(work),
        "--model",
        "tsfm_test",
        "--runs",
        "hippocampus-only",
        "--patch",
        "8",
        "32",
        "32",
        "--batch-size",
        "2",
        "--steps",
        str(STEPS),
        "--validations",
        "1",
        "--val-cases",
        "1",
        "--optim",
        "adamw",
        "--lr",
        "1e-3",
        "--set",
        "ckpt_every_steps=10",
        *extra,
    ]


def _train_steps(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r["kind"] == "train"]


@pytest.mark.slow
def test_a_stopped_learning_benchmark_resumes_from_its_checkpoints(data_dir, tmp_path):
    work = tmp_path / "bench"
    run = work / "hippocampus-only" / "run"
    ckpts = run / "checkpoints"
    proc = subprocess.Popen(_bench(data_dir, work), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (ckpts / "latest.safetensors").is_file() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # what `timeout` sends
    assert proc.wait(60) == 143
    assert not (ckpts / "final.safetensors").exists(), (
        "the run ended before the stop: test not valid"
    )
    left = [
        q.pid
        for q in psutil.process_iter(["cmdline"])
        if str(run) in " ".join(q.info["cmdline"] or [])
    ]
    assert left == [], "the training run or its data workers outlived the benchmark"
    stopped_at = len(_train_steps(run))
    time.sleep(2)  # nothing writes to the run any more
    assert len(_train_steps(run)) == stopped_at < STEPS
    pool_mtime = (work / "hippocampus-only" / "pool" / "pool.json").stat().st_mtime_ns

    out = subprocess.run(
        _bench(data_dir, work, "--resume"), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "hippocampus-only: resuming from its latest checkpoint" in out.stdout
    assert _train_steps(run) == list(range(1, STEPS + 1))  # every step once, none redone twice
    assert (work / "hippocampus-only" / "pool" / "pool.json").stat().st_mtime_ns == pool_mtime
    bench = json.loads((work / "hippocampus-only" / "bench.json").read_text())
    assert bench["val"][-1]["step"] == STEPS

    final_mtime = (ckpts / "final.safetensors").stat().st_mtime_ns
    again = subprocess.run(
        _bench(data_dir, work, "--resume"), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "finished by an earlier invocation, kept" in again.stdout
    assert (ckpts / "final.safetensors").stat().st_mtime_ns == final_mtime

    other = subprocess.run(
        _bench(data_dir, work, "--resume", "--seed", "1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert other.returncode == 1
    assert "was started with other settings (seed)" in other.stderr
    assert (ckpts / "final.safetensors").stat().st_mtime_ns == final_mtime
