"""Benchmark: plan + preprocess real data with medfoundry and with nnU-Net v2, same run, same cases.

Protocol (../shared/BENCHMARKS.md): the two tools run one after the other on the same cases with the
same number of processes; each measurement is repeated (median of ``--repeats`` after one warm-up) and
peak memory is the largest RSS of any process of the run. Ratios are medfoundry / nnU-Net.

* medfoundry: ``pool build`` (which validates every case and measures the fingerprint) + ``plan`` +
  ``preprocess``, all with ``-j JOBS``.
* nnU-Net v2 (from PyPI, in a throwaway venv over torch==2.13.0, driven through its own command):
  ``nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres -npfp JOBS -np JOBS`` (as the reference figure, no
  ``--verify_dataset_integrity``; medfoundry's figure includes its validation).

Usage: ``python benchmarks/preprocess_vs_nnunet.py [--data ../shared/data] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, SETS, ensure_nnunet, make_inputs, run_measured  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medfoundry-bench-preprocess"))
    ap.add_argument("--nnunet-venv", type=Path, default=Path("/tmp/nnunet-venv"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    nnunet_version = ensure_nnunet(args.nnunet_venv)
    print(
        f"processes: -j {args.jobs} / -np {args.jobs} -npfp {args.jobs}; OMP_NUM_THREADS=2; repeats {args.repeats} after 1 warm-up"
    )
    print(
        f"reference: nnunetv2 {nnunet_version} from PyPI, driven by nnUNetv2_plan_and_preprocess (no dataset integrity check)"
    )
    rows = []
    for name in args.sets:
        raw = make_inputs(name, args.data, args.work)
        ours = measure(
            functools.partial(medfoundry_cmds, raw, jobs=args.jobs),
            args.work / "mf" / name,
            env,
            args.repeats,
        )
        ref = measure(
            functools.partial(nnunet_cmds, name, raw, jobs=args.jobs, venv=args.nnunet_venv),
            args.work / "nn" / name,
            env,
            args.repeats,
        )
        rows.append((name, ours, ref))
    print()
    print(
        "| data | cases | medfoundry wall s (min-max) | nnU-Net wall s (min-max) | time ratio | medfoundry peak RSS GB | nnU-Net peak RSS GB | memory ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, ours, ref in rows:
        cases = len(json.loads((args.work / "inputs" / name / "pool_cases.json").read_text()))
        print(
            f"| {name} | {cases} | {fmt(ours['wall'])} | {fmt(ref['wall'])} | {ours['wall_median'] / ref['wall_median']:.3f} | "
            f"{ours['rss_gb']:.2f} | {ref['rss_gb']:.2f} | {ours['rss_gb'] / ref['rss_gb']:.3f} |"
        )


def fmt(walls: list[float]) -> str:
    return f"{statistics.median(walls):.1f} ({min(walls):.1f}-{max(walls):.1f})"


def medfoundry_cmds(raw: Path, out: Path, *, jobs: int) -> list[list[str]]:
    mf = [sys.executable, "-m", "medfoundry.cli.main", "-q"]
    return [
        [*mf, "pool", "build", str(raw / "pool.yaml"), "-o", str(out), "-j", str(jobs)],
        [*mf, "plan", str(out)],
        [*mf, "preprocess", str(out), "-j", str(jobs)],
    ]


def nnunet_cmds(name: str, raw: Path, out: Path, *, jobs: int, venv: Path) -> list[list[str]]:
    os.environ.update(
        {
            "nnUNet_raw": str(raw),
            "nnUNet_preprocessed": str(out),
            "nnUNet_results": str(out / "results"),
        }
    )
    return [
        [
            str(venv / "bin" / "nnUNetv2_plan_and_preprocess"),
            "-d",
            str(SETS[name]["nnunet_id"]),
            "-c",
            "3d_fullres",
            "-npfp",
            str(jobs),
            "-np",
            str(jobs),
        ]
    ]


def measure(make_cmds, out_root: Path, env: dict, repeats: int) -> dict:
    walls, peaks = [], []
    for i in range(repeats + 1):  # run 0 is the warm-up
        out = out_root / f"run{i}"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        wall, peak = run_measured(
            make_cmds(out),
            {**env, **{k: os.environ[k] for k in os.environ if k.startswith("nnUNet_")}},
        )
        print(
            f"  {out_root.parent.name}/{out_root.name} run {i}: {wall:.2f} s, peak RSS {peak:.2f} GB",
            flush=True,
        )
        if i:
            walls.append(wall)
            peaks.append(peak)
    return {"wall": walls, "wall_median": statistics.median(walls), "rss_gb": max(peaks)}


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\nbenchmark took {time.time() - t0:.0f} s")
