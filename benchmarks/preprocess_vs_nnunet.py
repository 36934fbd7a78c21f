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
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETS = {
    "hippocampus": {"nnunet_id": 4, "folder": "msd_task04_hippocampus"},
    "acdc": {"nnunet_id": 27, "folder": "acdc"},
}


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


def ensure_nnunet(venv: Path) -> str:
    if not (venv / "bin" / "nnUNetv2_plan_and_preprocess").exists():
        print(f"installing nnunetv2 into {venv} (torch==2.13.0 first, CPU build)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        subprocess.run([*pip, "install", "-q", "torch==2.13.0"], check=True)
        version = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        constraint = (
            venv / "torch-constraint.txt"
        )  # keeps pip from swapping in a CUDA torch for a dependency
        constraint.write_text(f"torch=={version}\n")
        subprocess.run([*pip, "install", "-q", "-c", str(constraint), "nnunetv2"], check=True)
        # torchvision (pulled in through timm) does not import on these machines; planning needs neither.
        subprocess.run([*pip, "uninstall", "-y", "-q", "torchvision"], check=True)
    out = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('nnunetv2'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def make_inputs(name: str, data: Path, work: Path) -> Path:
    """The same cases for both tools: an nnU-Net raw folder of symlinks and a medfoundry pool file over it."""
    info = SETS[name]
    raw = work / "inputs" / name
    ds_dir = raw / f"Dataset{info['nnunet_id']:03d}_{name}"
    if raw.exists():
        shutil.rmtree(raw)
    (ds_dir / "imagesTr").mkdir(parents=True)
    (ds_dir / "labelsTr").mkdir()
    src = data / info["folder"]
    if name == "acdc":
        cases = [c for f in ("train.list", "val.list") for c in (src / f).read_text().split()]
        pairs = [(src / "images" / f"{c}.nii.gz", src / "labels" / f"{c}.nii.gz", c) for c in cases]
        labels = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
        label_map = "{1: right_ventricle, 2: myocardium, 3: left_ventricle}"
    else:
        pairs = [
            (src / "imagesTr" / p.name, p, p.name[: -len(".nii.gz")])
            for p in sorted((src / "labelsTr").glob("*.nii.gz"))
        ]
        labels = {"background": 0, "Anterior": 1, "Posterior": 2}
        label_map = "{1: hippocampus_anterior, 2: hippocampus_posterior}"
    for image, label, case in pairs:
        (ds_dir / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(image)
        (ds_dir / "labelsTr" / f"{case}.nii.gz").symlink_to(label)
    (ds_dir / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MRI"},
                "labels": labels,
                "numTraining": len(pairs),
                "file_ending": ".nii.gz",
            }
        )
    )
    (raw / "pool.yaml").write_text(
        f"name: {name}\ndatasets:\n  - name: {name}\n    root: {ds_dir.name}\n"
        f"    modality: MRI\n    label_map: {label_map}\n"
    )
    (raw / "pool_cases.json").write_text(json.dumps([c for _, _, c in pairs]))
    return raw


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


def run_measured(cmds: list[list[str]], env: dict) -> tuple[float, float]:
    """Wall time of the commands in sequence and the largest RSS of any process they started (GB).

    A fresh wrapper process runs them, so its RUSAGE_CHILDREN covers exactly this run.
    """
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "for c in json.loads(sys.argv[1]):\n"
        "    r = subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
        "    if r.returncode: sys.exit(f'command failed: {c}: {r.stderr[-2000:]}')\n"
        "print(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, json.dumps(cmds)], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    wall, kb = json.loads(out.stdout)
    return wall, kb / 2**20


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\nbenchmark took {time.time() - t0:.0f} s")
