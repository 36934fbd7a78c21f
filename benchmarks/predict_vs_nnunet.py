"""Benchmark: prediction seconds per volume and peak memory, medfoundry vs nnU-Net v2, CPU.

Same run, same real hippocampus volumes, same network size (nnU-Net's plan for Dataset004: 4 stages,
32-64-128-256 features, patch 40x56x40; medfoundry's TSFM-CNN configured like it), same tile step
(0.5, Gaussian weighting), one preprocessing and one export process each, two torch threads. Both
networks carry untrained weights (speed does not depend on them): nnU-Net's checkpoint is written by
its own trainer (``save_checkpoint`` after ``on_train_start``), medfoundry's by a one-step run. Each
tool runs as a fresh command over the folder (``nnUNetv2_predict``, ``medfoundry predict``), with and
without mirroring (8 mirrored passes, all three axes, for both), so process start-up is included the
same way. medfoundry runs with its defaults (bf16 autocast where the CPU has it) and in fp32
(``--no-amp``), the like-for-like row (nnU-Net predicts in fp32 on CPU).
Usage: ``python benchmarks/predict_vs_nnunet.py [--cases 20]``.

Measured 2026-11-22 (20 cases, 2-core CPU, nnunetv2 2.8.1): s/volume without mirroring nnU-Net 0.749,
medfoundry fp32 0.357 (0.48x), defaults 0.230 (0.31x); with mirroring 2.399 / 2.119 (0.88x) / 1.143 (0.48x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, ensure_nnunet, make_inputs, run_in_own_session, run_measured  # noqa: E402

from medfoundry.runs.checkpoint import find_checkpoint  # noqa: E402

PATCH = [40, 56, 40]
NNUNET_LIKE = "{base_features: 32, max_features: 256, blocks_per_stage: [1, 1, 1, 1], decoder_blocks: 1, transformer_depth: 0}"
SAVE_NNUNET = """
import os, torch
torch.set_num_threads(2)
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
pre = os.path.join(os.environ["nnUNet_preprocessed"], "Dataset004_hippocampus")
plans = load_json(pre + "/nnUNetPlans.json")
plans["continue_training"] = False  # what nnU-Net's own run_training adds (2.8)
t = nnUNetTrainer(plans, "3d_fullres", 0, load_json(pre + "/dataset.json"), device=torch.device("cpu"))
t.on_train_start()
t.save_checkpoint(os.path.join(t.output_folder, "checkpoint_final.pth"))
os._exit(0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medfoundry-bench-predict"))
    ap.add_argument("--nnunet-venv", type=Path, default=Path("/tmp/nnunet-venv"))
    ap.add_argument("--cases", type=int, default=20)
    args = ap.parse_args()
    work = args.work
    env = {**os.environ, "OMP_NUM_THREADS": "2", "nnUNet_n_proc_DA": "1"}
    version = ensure_nnunet(args.nnunet_venv)
    raw = make_inputs("hippocampus", args.data, work)
    env.update(
        {
            "nnUNet_raw": str(raw),
            "nnUNet_preprocessed": str(work / "nnunet_preprocessed"),
            "nnUNet_results": str(work / "nnunet_results"),
        }
    )
    nn = args.nnunet_venv / "bin"
    if not (work / "nnunet_preprocessed" / "Dataset004_hippocampus").is_dir():
        cmd = [str(nn / "nnUNetv2_plan_and_preprocess"), "-d", "4", "-c", "3d_fullres", "-np", "2"]
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    code = run_in_own_session(
        [str(nn / "python"), "-c", SAVE_NNUNET], env, work / "save.out", work / "save.err"
    )
    if code != 0:
        sys.exit(f"nnU-Net checkpoint writer failed (exit {code}), see {work / 'save.err'}")
    images = work / "imagesTs"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir()
    for f in sorted((raw / "Dataset004_hippocampus" / "imagesTr").iterdir())[: args.cases]:
        (images / f.name).symlink_to(f.resolve())
    mf_run = _medfoundry_checkpoint(raw, work, env)

    rows = []
    for mirror in (False, True):
        out = work / "out"
        runs = [
            (
                "nnU-Net v2",
                [
                    str(nn / "nnUNetv2_predict"),
                    "-i",
                    str(images),
                    "-o",
                    str(out),
                    "-d",
                    "4",
                    "-c",
                    "3d_fullres",
                    "-f",
                    "0",
                    "-chk",
                    "checkpoint_final.pth",
                    "-device",
                    "cpu",
                    "-npp",
                    "1",
                    "-nps",
                    "1",
                    "-step_size",
                    "0.5",
                    *([] if mirror else ["--disable_tta"]),
                ],
            ),
            ("medfoundry, fp32", _mf_predict(mf_run, images, out, mirror, amp=False)),
            (
                "medfoundry, defaults (bf16 where native)",
                _mf_predict(mf_run, images, out, mirror, amp=True),
            ),
        ]
        ref = None
        for label, cmd in runs:
            shutil.rmtree(out, ignore_errors=True)
            wall, rss = run_measured([cmd], env)
            written = len(list(out.glob("*.nii.gz")))
            if written != args.cases:
                raise SystemExit(f"{label}: wrote {written} of {args.cases} volumes")
            per = wall / args.cases
            ref = ref or (per, rss)
            rows.append((label, mirror, per, rss, per / ref[0], rss / ref[1]))
    print(
        f"reference: nnunetv2 {version}; {args.cases} real hippocampus volumes; patch {PATCH}; 2 threads"
    )
    print("| tool | mirroring | s / volume | peak RSS GB | time ratio to nnU-Net | memory ratio |")
    print("|---|---|---|---|---|---|")
    for label, mirror, per, rss, rt, rm in rows:
        print(
            f"| {label} | {'on' if mirror else 'off'} | {per:.3f} | {rss:.2f} | {rt:.2f} | {rm:.2f} |"
        )


def _medfoundry_checkpoint(raw: Path, work: Path, env: dict) -> Path:
    """A one-step run of the nnU-Net-like TSFM-CNN on the hippocampus pool (weights do not matter)."""
    run = work / "mf_run"
    if find_checkpoint(run, "final"):
        return run
    shutil.rmtree(run, ignore_errors=True)
    pool = work / "mf_pool"
    mf = [sys.executable, "-m", "medfoundry.cli.main", "-q"]
    subprocess.run(
        [*mf, "pool", "build", str(raw / "pool.yaml"), "-o", str(pool)], check=True, env=env
    )
    subprocess.run(
        [*mf, "plan", str(pool), "--patch", *map(str, PATCH), "--batch-size", "2"],
        check=True,
        env=env,
    )
    subprocess.run([*mf, "preprocess", str(pool)], check=True, env=env)
    sets = [
        "epochs=1",
        "iters_per_epoch=1",
        "validation.every=0",
        "validation.final=false",
        "loss=softmax",
        "deep_supervision=true",
        f"model_overrides={NNUNET_LIKE}",
        "data.num_workers=0",
    ]
    subprocess.run(
        [
            *mf,
            "pretrain",
            str(pool),
            "-o",
            str(run),
            "--model",
            "tsfm_b_cnn",
            *sum((["--set", s] for s in sets), []),
        ],
        check=True,
        env=env,
    )
    return run


def _mf_predict(run: Path, images: Path, out: Path, mirror: bool, amp: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medfoundry.cli.main",
        "-q",
        "predict",
        "-m",
        str(run),
        "-i",
        str(images),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--step",
        "0.5",
        "--mirror" if mirror else "--no-mirror",
        *([] if amp else ["--no-amp"]),
    ]


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\nbenchmark took {time.time() - t0:.0f} s")
