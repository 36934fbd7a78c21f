"""Helpers shared by the benchmark scripts: the nnU-Net reference environment, the same inputs for both
tools, and measured subprocess runs (wall time, peak RSS of any process)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MF = [sys.executable, "-m", "medfoundry.cli.main", "-q"]
SETS = {
    "hippocampus": {"nnunet_id": 4, "folder": "msd_task04_hippocampus"},
    "acdc": {"nnunet_id": 27, "folder": "acdc"},
}


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


def run_in_own_session(cmd: list[str], env: dict, stdout: Path, stderr: Path) -> int:
    """Run ``cmd`` in its own session, output to files. nnU-Net's augmentation workers outlive its
    scripts, so wait for the process itself (not for its pipes to close), then end the whole session."""
    with open(stdout, "w") as fo, open(stderr, "w") as fe:
        proc = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe, start_new_session=True)
        code = proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return code


def medfoundry(args: list[str], env: dict | None = None) -> None:
    """Run ``medfoundry -q ARGS``; its own one-line error is on stderr, so a failure ends the
    benchmark with one more line rather than a traceback."""
    code = subprocess.run([*MF, *args], env=env).returncode
    if code:
        raise SystemExit(
            f"benchmark stopped: `medfoundry {' '.join(args[:2])} ...` exited with {code}"
        )


def sets_args(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def time_pretrain(
    pool: Path,
    run: Path,
    model: str,
    steps: int,
    extra: list[str],
    env: dict,
    threads: int = 2,
    workers: int = 2,
) -> list[dict]:
    """``medfoundry pretrain`` for ``steps`` steps without validation; returns its training rows."""
    if run.exists():
        shutil.rmtree(run)
    sets = [
        "epochs=1",
        f"iters_per_epoch={steps}",
        "validation.every=0",
        "validation.final=false",
        f"threads={threads}",
        f"data.num_workers={workers}",
        f"ckpt_every_steps={steps}",
        *extra,
    ]
    medfoundry(["pretrain", str(pool), "-o", str(run), "--model", model, *sets_args(sets)], env)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "train"]


def step_times(train: list[dict], warmup: int) -> tuple[list[float], float]:
    """Step times after ``warmup`` steps and the fraction of that time spent waiting for data."""
    rows = train[warmup:]
    times = [r["step_time_s"] for r in rows]
    return times, sum(r["data_wait_frac"] * r["step_time_s"] for r in rows) / sum(times)
