"""Benchmark: training samples per second and peak GPU memory of the TSFM sizes on real data, one GPU.

The real hippocampus pool (``--data``), one patch and batch for every size, ``medfoundry pretrain
--device cuda`` with the defaults (bf16 autocast, channels-last, partial-label loss, augmentation in
background workers), no validation. Step times include waiting for data; the first ``--warmup`` steps
(cuDNN autotuning, allocator growth) are left out. Peak memory is ``torch.cuda.max_memory_allocated``
over the run (what the caching allocator handed out, not what ``nvidia-smi`` shows).
Usage: ``python benchmarks/train_sizes_gpu.py [--sizes tsfm_s tsfm_b tsfm_l] [--patch 64 64 64]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, make_inputs, medfoundry, step_times, time_pretrain  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medfoundry-bench-sizes"))
    ap.add_argument("--sizes", nargs="+", default=["tsfm_s", "tsfm_b", "tsfm_l"])
    ap.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64], help="Z Y X voxels")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--iters", type=int, default=40, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--workers", type=int, default=8, help="augmentation workers")
    ap.add_argument("--extra", nargs="*", default=[], help="more --set key=value for every size")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (torch.cuda.is_available() is False)")
    env = {**os.environ, "OMP_NUM_THREADS": "4"}
    raw = make_inputs("hippocampus", args.data, args.work)
    pool = args.work / "pool"
    if not (pool / "preprocessed" / "manifest.json").is_file():
        medfoundry(["pool", "build", str(raw / "pool.yaml"), "-o", str(pool)], env)
        medfoundry(["plan", str(pool), "--model", "tsfm_s"], env)
        medfoundry(["preprocess", str(pool), "-j", "8"], env)
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}; patch {args.patch}, batch "
        f"{args.batch_size}, {args.workers} augmentation workers, {args.warmup} warm-up + "
        f"{args.iters} timed steps; defaults (bf16 autocast, channels-last) {' '.join(args.extra)}"
    )
    print("| size | parameters | median step s | samples/s | data-wait fraction | peak GPU GiB |")
    print("|---|---|---|---|---|---|")
    patch = ",".join(map(str, args.patch))
    for size in args.sizes:
        extra = [
            f"patch_size=[{patch}]",
            f"batch_size={args.batch_size}",
            "device=cuda",
            *args.extra,
        ]
        n = args.warmup + args.iters
        train = time_pretrain(
            pool, args.work / f"run_{size}", size, n, extra, env, threads=4, workers=args.workers
        )
        times, wait = step_times(train, args.warmup)
        med = statistics.median(times)
        params = _params(size, args.patch)
        print(
            f"| {size} | {params / 1e6:.1f}M | {med:.3f} | {args.batch_size / med:.1f} | {wait:.3f} "
            f"| {train[-1]['gpu_mem_gb']:.1f} |",
            flush=True,
        )


def _params(size: str, patch: list[int]) -> int:
    from medfoundry.models.registry import count_parameters, create_model

    return count_parameters(create_model(size, 1, 2, patch_size=patch, device="meta"))


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\nbenchmark took {time.time() - t0:.0f} s")
