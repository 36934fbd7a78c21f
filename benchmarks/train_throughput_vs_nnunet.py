"""Benchmark: training samples per second on real hippocampus data, medfoundry vs nnU-Net v2, CPU.

Same run, same machine, same patch (nnU-Net's plan for Dataset004: 40x56x40), same batch (7), a
comparable CNN (medfoundry's TSFM family configured like nnU-Net's plan: 4 stages, 32-64-128-256
features, two 3x3x3 convs per encoder and decoder stage, softmax CE + Dice, deep supervision), two
torch threads and two data-augmentation workers each. nnU-Net v2 (PyPI, throwaway venv) is driven
through its Python API (``nnUNetTrainer.train_step`` on its own data loader), which avoids importing
its Primus trainers (timm/torchvision do not work here). Step times include waiting for data.

Also, with ``--sizes``, medfoundry's own sizes at the same patch (samples/s only).
Usage: ``python benchmarks/train_throughput_vs_nnunet.py [--iters 15] [--sizes tsfm_s]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO,
    ensure_nnunet,
    make_inputs,
    medfoundry,
    run_in_own_session,
    step_times,
    time_pretrain,
)

PATCH = [40, 56, 40]
BATCH = 7
NNUNET_LIKE = "{base_features: 32, max_features: 256, blocks_per_stage: [1, 1, 1, 1], decoder_blocks: 1, transformer_depth: 0}"

NNUNET_SCRIPT = """
import json, os, sys, time, torch
torch.set_num_threads(2)
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
pre = os.path.join(os.environ["nnUNet_preprocessed"], "Dataset004_hippocampus")
plans = load_json(pre + "/nnUNetPlans.json")
plans["continue_training"] = False  # what nnU-Net's own run_training adds (2.8)
trainer = nnUNetTrainer(plans, "3d_fullres", 0, load_json(pre + "/dataset.json"), device=torch.device("cpu"))
trainer.on_train_start()
cm = trainer.configuration_manager
print(json.dumps({"patch": list(cm.patch_size), "batch": cm.batch_size,
                  "features": cm.network_arch_init_kwargs.get("features_per_stage")}), file=sys.stderr)
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    trainer.train_step(next(trainer.dataloader_train))
    times.append(time.perf_counter() - t)
print(json.dumps(times))
sys.stdout.flush()
os._exit(0)  # skip nnU-Net's end-of-training work (validation, exports)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medfoundry-bench-train"))
    ap.add_argument("--nnunet-venv", type=Path, default=Path("/tmp/nnunet-venv"))
    ap.add_argument("--iters", type=int, default=15, help="timed iterations (after --warmup)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--sizes", nargs="*", default=[], help="also time these medfoundry sizes")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "2", "nnUNet_n_proc_DA": "2"}
    version = ensure_nnunet(args.nnunet_venv)
    raw = make_inputs("hippocampus", args.data, args.work)
    nn_out = args.work / "nnunet_preprocessed"
    env.update(
        {
            "nnUNet_raw": str(raw),
            "nnUNet_preprocessed": str(nn_out),
            "nnUNet_results": str(args.work / "nnunet_results"),
        }
    )
    if not (nn_out / "Dataset004_hippocampus" / "nnUNetPlans_3d_fullres").is_dir():
        subprocess.run(
            [
                str(args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess"),
                "-d",
                "4",
                "-c",
                "3d_fullres",
                "-np",
                "2",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
    pool = args.work / "mf_pool"
    medfoundry(["pool", "build", str(raw / "pool.yaml"), "-o", str(pool)], env)
    plan = ["plan", str(pool), "--model", "tsfm_s", "--patch", *map(str, PATCH)]
    medfoundry([*plan, "--batch-size", str(BATCH)], env)
    medfoundry(["preprocess", str(pool)], env)
    n = args.iters + args.warmup
    print(
        f"torch threads 2, augmentation workers 2 (medfoundry data.num_workers=2, nnUNet_n_proc_DA=2); patch {PATCH}, batch {BATCH}"
    )
    print(
        f"reference: nnunetv2 {version}, nnUNetTrainer via its Python API; {args.warmup} warm-up + {args.iters} timed iterations"
    )

    t = time.perf_counter()
    nn_times, nn_plan = run_nnunet(args.nnunet_venv, n, env, args.work)
    nn_times = nn_times[args.warmup :]
    print(f"nnU-Net plan used: {nn_plan} ({time.perf_counter() - t:.0f} s)")

    rows = [("nnU-Net v2 (PlainConvUNet 32-256)", nn_times, None)]
    configs = [
        (
            "medfoundry TSFM-CNN 32-256 (nnU-Net-like)",
            "tsfm_b_cnn",
            ["loss=softmax", "deep_supervision=true", f"model_overrides={NNUNET_LIKE}"],
        ),
        (  # nnU-Net trains in fp32 on CPU: the like-for-like row
            "medfoundry TSFM-CNN 32-256, fp32 (amp and channels-last off)",
            "tsfm_b_cnn",
            [
                "loss=softmax",
                "deep_supervision=true",
                f"model_overrides={NNUNET_LIKE}",
                "amp=false",
                "channels_last=false",
            ],
        ),
    ]
    configs += [
        (f"medfoundry {s}", s, ["loss=softmax", "deep_supervision=true"]) for s in args.sizes
    ]
    for label, model, extra in configs:
        train = time_pretrain(pool, args.work / f"run_{len(rows)}", model, n, extra, env)
        times, wait = step_times(train, args.warmup)
        rows.append((label, times, wait))
    ref = BATCH / statistics.median(nn_times)
    print()
    print("| what | median step s (min-max) | samples/s | ratio to nnU-Net | data-wait fraction |")
    print("|---|---|---|---|---|")
    for label, times, wait in rows:
        sps = BATCH / statistics.median(times)
        w = "n/a" if wait is None else f"{wait:.3f}"
        print(
            f"| {label} | {statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f}) | {sps:.2f} | {sps / ref:.2f} | {w} |"
        )


def run_nnunet(venv: Path, steps: int, env: dict, work: Path) -> tuple[list[float], str]:
    out, err = work / "nnunet_stdout.txt", work / "nnunet_stderr.txt"
    cmd = [str(venv / "bin" / "python"), "-c", NNUNET_SCRIPT, str(steps)]
    if run_in_own_session(cmd, env, out, err):
        raise SystemExit(err.read_text()[-3000:])
    plan = [line for line in err.read_text().splitlines() if line.startswith("{")][-1]
    return json.loads(out.read_text().strip().splitlines()[-1]), plan


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\nbenchmark took {time.time() - t0:.0f} s")
