"""Is bf16 training safe on this CPU for this network and batch? Checked once, in a child process.

oneDNN's AMX bf16 weight-gradient convolution kernel (``brgconv_bwd_w``, torch 2.13 CPU) hangs, crashes
or corrupts the heap for some shapes: on this project's Xeon CPUs, e.g. tsfm_s at patch 8x128x128
(a 1x1x1 head on 16 channels with 128 voxels along X hangs; 3x3x3 layers at 256 along X too). The
forward and input-gradient kernels are fine. As the failing shapes have no simple rule, one training
step is run in a child process under bf16 autocast, after an fp32 step whose time sets the child's
deadline (10x the fp32 time, at least 30 s) and whose gradients the bf16 ones must match. A child that
dies, hangs or returns wrong gradients means fp32 for this run. The verdict is cached per torch
version, CPU, network, patch, batch and thread count in ``$XDG_CACHE_HOME/medfoundry/bf16_checks.json``.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from medfoundry.models.registry import create_model_from_description
from medfoundry.utils.cache_dir import cache_dir
from medfoundry.utils.jsonfile import write_json

log = logging.getLogger(__name__)
MAX_REL_ERROR = 0.1
"""Largest relative L2 error of the bf16 gradients against fp32 ones (bf16 alone gives about 0.01)."""
CHECK_VERSION = 2
"""Part of the cache key: verdicts of an older check are redone (version 1 passed NaN gradients)."""


def cpu_bf16_training_ok(model_meta: dict, batch_size: int, threads: int) -> tuple[bool, str]:
    """``(ok, reason)`` for training the network described by ``model_meta`` (a checkpoint's
    ``model`` entry) with ``batch_size`` samples under CPU bf16 autocast; cached per machine."""
    job = {"model": model_meta, "batch_size": batch_size, "threads": threads}
    key = _cache_key(job)
    cache_file = cache_dir() / "bf16_checks.json"
    cache = _read_cache(cache_file)
    if key not in cache:
        log.info("checking bf16 training on this CPU for this network (once per machine)")
        cache[key] = _run_child(job)
        try:  # the cache only saves time: a read-only cache folder is not an error
            write_json(cache_file, {**_read_cache(cache_file), key: cache[key]})
        except OSError as exc:
            log.warning("could not cache the bf16 check in %s (%s)", cache_file, exc)
    return cache[key]["ok"], cache[key]["reason"]


def _run_child(job: dict) -> dict:
    cmd = [sys.executable, "-m", "medfoundry.training.amp_check", json.dumps(job)]
    try:  # the child's own watchdog ends a hung bf16 step; this bounds the rest of it
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": "a bf16 training step hung in a test process"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    why = "hung" if "Timeout" in proc.stderr else f"died (exit code {proc.returncode})"
    return {"ok": False, "reason": f"a bf16 training step {why} in a test process"}


def _cache_key(job: dict) -> str:
    cpu = platform.processor() or platform.machine()
    text = json.dumps([CHECK_VERSION, torch.__version__, cpu, _cpu_name(), job], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _step_grads(net, x, bf16: bool) -> torch.Tensor:
    net.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = net(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    out.float().square().mean().backward()
    return torch.cat([p.grad.float().flatten() for p in net.parameters() if p.grad is not None])


def _child(job: dict) -> dict:
    """One fp32 and one bf16 step of the network on random input; compares their gradients."""
    m = job["model"]
    torch.set_num_threads(job["threads"] or torch.get_num_threads())
    torch.manual_seed(0)
    net = create_model_from_description(m).to(memory_format=torch.channels_last_3d)
    x = torch.randn(job["batch_size"], m["in_channels"], *m["patch_size"])
    x = x.contiguous(memory_format=torch.channels_last_3d)
    t0 = time.perf_counter()
    ref = _step_grads(net, x, bf16=False)
    faulthandler.dump_traceback_later(max(30.0, 10 * (time.perf_counter() - t0)), exit=True)
    got = _step_grads(net, x, bf16=True)
    faulthandler.cancel_dump_traceback_later()
    if not torch.isfinite(got).all():  # seen on an AMD EPYC (AVX512-BF16, no AMX): NaN or inf
        return {"ok": False, "reason": "bf16 gradients are not finite (NaN or inf)"}
    err = float((got - ref).norm() / ref.norm().clamp_min(1e-12))
    if not err <= MAX_REL_ERROR:
        return {"ok": False, "reason": f"bf16 gradients differ from fp32 ones by {err:.0%} (L2)"}
    return {"ok": True, "reason": f"bf16 gradients within {err:.1%} of fp32 ones"}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))), flush=True)
